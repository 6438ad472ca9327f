"""Numbers and cursors from URLs, bounded: a value the database cannot hold is a 404 or a 400, never a 500."""
from flask import abort, request
from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER, the type of every id column
MAX_PAGE = 100_000


class BoundedInt(IntegerConverter):
    """`<int:...>` in every route: an id past what a column holds matches no route (404), as a missing row does."""

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):
        super().__init__(map, fixed_digits, min, MAX_ID if max is None else max, signed)


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


def page_number(name: str = "page") -> int:
    return arg_int(name, 1, 1, MAX_PAGE)
