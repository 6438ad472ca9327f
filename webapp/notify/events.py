"""Recording changes for the watchers: one row in the request's transaction; a worker does the rest."""
from datetime import timedelta

from sqlalchemy import select

from webapp.extensions import db
from webapp.jobs import FAN_OUT_DUE, enqueue_after_commit
from webapp.notify.models import PAGE, ContentEvent, Watch
from webapp.settings import SiteSettings
from webapp.signals import access_changed, content_changed
from webapp.timeutil import utcnow

FAN_OUT = "fan-out"


def record(kind: str, page, actor, *, comment=None, from_version=None, to_version=None) -> ContentEvent:
    """Record a change. Edits by one person to one page within the coalescing window join one event."""
    now = utcnow()
    window = timedelta(minutes=SiteSettings.get().notify_coalesce_minutes)
    if kind == "edited" and window:
        pending = db.session.scalar(select(ContentEvent).where(
            ContentEvent.page_id == page.id, ContentEvent.actor_id == actor.id, ContentEvent.kind == "edited",
            ContentEvent.fanned_out_at.is_(None)).order_by(ContentEvent.id.desc()).limit(1))
        if pending is not None:
            pending.to_version = to_version
            return pending
    event = ContentEvent(kind=kind, space_id=page.space_id, page_id=page.id, actor_id=actor.id,
                         comment_id=getattr(comment, "id", None), from_version=from_version, to_version=to_version,
                         created_at=now, send_after=now + window if kind == "edited" else now)
    db.session.add(event)
    if event.send_after <= now:
        wake_fan_out()
    return event


def pending_edit(page, actor) -> ContentEvent | None:
    """The edit notification still waiting for `actor`'s window on `page` (further edits join it), if any."""
    return db.session.scalar(select(ContentEvent).where(
        ContentEvent.page_id == page.id, ContentEvent.actor_id == actor.id, ContentEvent.kind == "edited",
        ContentEvent.fanned_out_at.is_(None), ContentEvent.send_after > utcnow()).order_by(ContentEvent.id.desc())
        .limit(1))


def wake_fan_out() -> None:
    enqueue_after_commit(FAN_OUT_DUE, once=FAN_OUT, job_timeout=3600)


def _on_content_changed(page, *, kind: str, actor, comment=None, from_version=None, to_version=None) -> None:
    """Content changed: the actor watches what they created or edited, and the watchers will be told."""
    if kind in ("created", "edited"):
        watch_what_i_touch(actor, page)
    record(kind, page, actor, comment=comment, from_version=from_version, to_version=to_version)


def _on_access_changed(space, *, user=None) -> None:
    """Someone may no longer view `space` (a role removed, the space closed to everyone): their watches of it go,
    so neither the Watching list nor a notification shows them what they may not see."""
    from webapp.auth.models import User
    from webapp.spaces.access import can
    from webapp.spaces.models import VIEW

    query = select(Watch).where(Watch.space_id == space.id)
    if user is not None:
        query = query.where(Watch.user_id == user.id)
    for watch in db.session.scalars(query).all():
        if not can(db.session.get(User, watch.user_id), space, VIEW):
            db.session.delete(watch)


def connect() -> None:
    """Listen to content and spaces (create_app calls this; connecting twice changes nothing)."""
    content_changed.connect(_on_content_changed)
    access_changed.connect(_on_access_changed)


def watch_what_i_touch(actor, page) -> None:
    """People who create or edit a page watch it, unless they turned that off."""
    if actor.watch_own_edits and db.session.scalar(select(Watch.id).where(
            Watch.user_id == actor.id, Watch.scope == PAGE, Watch.page_id == page.id)) is None:
        db.session.add(Watch(user_id=actor.id, scope=PAGE, space_id=page.space_id, page_id=page.id))
