"""The Atom feed of a space's archive, for feed readers: signed in by the person's feed token, not a session."""
from flask import abort, make_response, render_template, request
from sqlalchemy import select

from webapp.archive import bp, feeds, services
from webapp.auth.feed_tokens import user_for
from webapp.extensions import db
from webapp.settings import base_url
from webapp.spaces.access import can
from webapp.spaces.models import VIEW, Space


@bp.route("/spaces/<key>/mail/feed.atom")
def feed(key):
    """?token=… (Profile › Feeds); ?kind=threads for new threads, else every message."""
    user = user_for(request.args.get("token"))
    if user is None:
        abort(401, "This feed needs the feed token from your profile (Profile › Feeds) in its address.")
    space = db.session.scalar(select(Space).where(Space.key == key))
    if space is None or space.is_personal or not services.archiving_enabled() or not can(user, space, VIEW):
        abort(404)
    threads = request.args.get("kind") == "threads"
    rows = feeds.newest_threads(space.id) if threads else feeds.newest_messages(space.id)
    response = make_response(render_template("archive/feed.xml", space=space, rows=rows, threads=threads,
                                             base=base_url(), clean=feeds.xml_text))
    response.mimetype = "application/atom+xml"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response
