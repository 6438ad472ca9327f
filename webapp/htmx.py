"""htmx helpers: one route serves a full page or the partial htmx asked for."""
from flask import make_response, redirect, render_template, request

from webapp.extensions import htmx


def is_htmx() -> bool:
    """True for requests htmx made (and not for its history restores, which want the page)."""
    return bool(htmx) and not htmx.history_restore_request


def page_or_partial(page: str, partial: str, status: int = 200, **context):
    """Render the partial for htmx, the page otherwise; caches must keep the two apart."""
    template = partial if is_htmx() else page
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    return response


def partial(template: str, status: int = 200, trigger: str | None = None, **context):
    """Render a fragment; `trigger` names an event htmx fires on the body for other regions."""
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    if trigger:
        response.headers["HX-Trigger"] = trigger
    return response


def wanted_on() -> bool:
    """In-place switches post the state they want (value=on/off), so a double click cannot flip twice."""
    return request.form.get("value") == "on"


def switch_response(back: str, template: str, **context):
    """After an in-place switch: without JavaScript the page it sits on, else the switch's own partial."""
    if not is_htmx():
        return redirect(back)
    return partial(template, **context)
