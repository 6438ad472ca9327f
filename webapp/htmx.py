"""htmx helpers: one route serves a full page or the partial htmx asked for."""
from flask import make_response, render_template

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
