"""Numbers and cursors from URLs, bounded: a value the database cannot hold is a 404 or a 400, never a 500."""
from flask import abort, request
from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER, the type of every id column
MAX_PAGE = 100_000


class BoundedInt(IntegerConverter):
    """`<int:...>` in every route: an id past what a column holds matches no route (404), as a missing row does."""

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):
        super().__init__(map, fixed_digits, min, MAX_ID if max is None else max, signed)


def refuse_nul() -> None:
    """Before every request: a NUL in the path, a query argument or a form field is refused with a 400. No form
    needs one, PostgreSQL cannot store or compare one (a 500 there), and protocol clients would send it on."""
    if "\x00" in request.path or any("\x00" in value for source in (request.args, request.form)
                                     for values in source.listvalues() for value in values):
        abort(400, "The request holds a NUL character, which no field accepts.")


def arg_int(name: str, default: int | None, low: int = 1, high: int = MAX_ID) -> int | None:
    """An integer query argument within [low, high]; anything else is a 400 saying which argument and why."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        abort(400, f"“{name}” must be a whole number.")
    if not low <= value <= high:
        abort(400, f"“{name}” must be between {low} and {high}.")
    return value


def form_id(name: str) -> int | None:
    """An id posted in a form field: None when absent or not a number, a 404 when no row could have it."""
    raw = request.form.get(name, "")
    if not raw.isdigit():
        return None
    value = int(raw)
    if not 0 < value <= MAX_ID:
        abort(404)
    return value


def page_number(name: str = "page") -> int:
    return arg_int(name, 1, 1, MAX_PAGE)
