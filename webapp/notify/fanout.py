"""Turning due content events into mail: one OutboundMail row per watcher, made by a worker in batches."""
import logging
import secrets
from datetime import timedelta
from types import SimpleNamespace

from markupsafe import escape
from sqlalchemy import select, update

from webapp.auth.models import User
from webapp.content.models import Comment, Page
from webapp.content.render import diff_excerpt, markdown
from webapp.content.services import version
from webapp.extensions import db
from webapp.notify.audience import list_label, recipients
from webapp.notify.events import wake_fan_out
from webapp.notify.models import ContentEvent
from webapp.notify.replies import reply_addresser
from webapp.notify.watches import unwatch_token
from webapp.outgoing.compose import inline_css, message_id_host
from webapp.outgoing.queue import queue_many
from webapp.settings import base_url
from webapp.spaces.models import Space
from webapp.timeutil import utcnow

BATCH = 500
FIRST_BATCH = 100  # the first batch smaller: the senders start on it sooner (B6, docs/benchmarks.md)
POISON_ATTEMPTS = 3  # unexpected failures of one event before it is set aside
log = logging.getLogger(__name__)
VERBS = {"created": "created", "edited": "edited", "commented": "commented on"}


def fan_out_due(committed=None) -> int:
    """Every due event, one at a time; returns how many mails were queued.

    An event is fanned out in batches of watchers, each committed with the event's progress (fan_out), so the
    senders start on the first batch (`committed()` is called after each). An event whose fan-out raises keeps
    what it committed, is counted and put off, so the events after it go out now; after POISON_ATTEMPTS tries it is
    set aside for an admin (Administration › System health › Failed events)."""
    queued = 0
    while True:
        event_id = db.session.scalar(select(ContentEvent.id).where(
            ContentEvent.fanned_out_at.is_(None), ContentEvent.failed_at.is_(None), ContentEvent.send_after <= utcnow())
            .order_by(ContentEvent.id).limit(1))
        db.session.rollback()  # nothing read here may be held while the batches commit
        if event_id is None:
            return queued
        try:
            done, count = fan_out(db.session.get(ContentEvent, event_id), committed)
            queued += count
            if not done:
                return queued  # another worker holds this event's fan-out: it goes on from where that one is
        except Exception as exc:
            db.session.rollback()
            log.exception("fan-out of content event %s failed", event_id)
            _count_failure(event_id, exc)


def _count_failure(event_id: int, exc: Exception) -> None:
    """Retry after 1, then 5 minutes, then set it aside; the error's class and text are kept for the admin."""
    event = db.session.get(ContentEvent, event_id)
    event.attempts += 1
    event.last_error = f"{type(exc).__name__}: {exc}"[:1000]
    if event.attempts >= POISON_ATTEMPTS:
        event.failed_at = utcnow()
    else:
        event.send_after = utcnow() + timedelta(minutes=5 ** (event.attempts - 1))
    db.session.commit()


def failed_events(limit: int = 100) -> list[ContentEvent]:
    return list(db.session.scalars(select(ContentEvent).where(ContentEvent.failed_at.is_not(None),
                                                              ContentEvent.fanned_out_at.is_(None))
                                   .order_by(ContentEvent.failed_at.desc()).limit(limit)))


def retry_event(event: ContentEvent) -> None:
    """Back in line now, its attempts counted afresh; the caller commits (which wakes the fan-out)."""
    event.failed_at, event.attempts, event.send_after = None, 0, utcnow()
    wake_fan_out()


def discard_event(event: ContentEvent) -> None:
    """Nobody is told of it; it stays in the history (and the daily report) as a change that happened."""
    event.fanned_out_at, event.recipients = utcnow(), 0


def fan_out(event: ContentEvent, committed=None) -> tuple[bool, int]:
    """One queued mail per recipient not yet told, committed BATCH recipients at a time (by user id; the first batch
    smaller, so the first mail goes sooner) together with the event's progress; (whether the event is done, how
    many mails this call queued).

    Each batch first moves the progress on from the value this worker read (a compare-and-set, which also takes
    the event's row lock): a second worker on the same event finds it moved, rolls its batch back and stops, so no
    one gets a mail twice. The body is rendered (and its CSS inlined) once for the event; each recipient's mail
    only fills in their own stop-watching link, reason and reply address."""
    page, space = db.session.get(Page, event.page_id), db.session.get(Space, event.space_id)
    actor = db.session.get(User, event.actor_id) if event.actor_id else None
    people = recipients(page, space, event.actor_id)
    event_id, progress = event.id, event.fanned_out_to
    todo = [p for p in people if progress is None or p.user.id > progress]
    first = min(FIRST_BATCH, BATCH)
    batches = [todo[:first]] + [todo[start:start + BATCH] for start in range(first, len(todo), BATCH)]
    fill = _filler(event, page, space, actor) if todo else None
    actor_ref = SimpleNamespace(id=actor.id) if actor else None
    queued = 0
    for batch in batches:
        last = batch[-1].user.id if batch else progress
        done = batch is batches[-1]
        # The rows first, the write after: on SQLite the INSERT takes the one write lock, held until the commit, so
        # a sender's claim gets in between batches (built under the lock, it waited out the whole fan-out).
        queue_many([fill(person) for person in batch], actor=actor_ref)
        moved = db.session.execute(
            update(ContentEvent).where(ContentEvent.id == event_id, ContentEvent.fanned_out_at.is_(None),
                                       ContentEvent.fanned_out_to.is_(None) if progress is None
                                       else ContentEvent.fanned_out_to == progress)
            .values(fanned_out_to=last, recipients=len(people), fanned_out_at=utcnow() if done else None)
            .execution_options(synchronize_session=False)).rowcount
        if not moved:
            db.session.rollback()  # this batch's rows with it
            return False, queued
        db.session.commit()  # this batch's mails and the progress together: the senders start on them now
        progress, queued = last, queued + len(batch)
        if committed is not None:
            committed()
    return True, queued


def _filler(event: ContentEvent, page: Page, space: Space, actor):
    """person -> their mail's fields: the event's parts rendered once, their own link, reason and reply address."""
    base = base_url()
    # Stand-ins for each recipient's own link and reason: random, so no page text can hold them by chance.
    slot = {"unwatch": f"unwatch-{secrets.token_hex(8)}", "reason": f"reason-{secrets.token_hex(8)}"}
    parts = _parts(event, page, space, actor, base, slot)
    host = message_id_host(base)
    thread = f"<page-{page.id}.{list_label(space)}@{host}>"
    list_id = f"{space.name} <{list_label(space)}.{host}>"
    addresser = reply_addresser()
    page_id, space_name = page.id, space.name  # read now: the batches' commits expire the rows

    def fill(person) -> dict:
        link = f"{base}/unwatch/{unwatch_token(person.watch)}"
        reason = person.reason.format(space=space_name)
        text = parts["text"].replace(slot["unwatch"], link).replace(slot["reason"], reason)
        html = None
        if person.user.mail_format == "html":
            html = parts["html"].replace(slot["unwatch"], link).replace(slot["reason"], str(escape(reason)))
        headers = {"List-Id": list_id, "In-Reply-To": thread, "References": thread,
                   "List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        if addresser:
            headers["Reply-To"] = f"{space_name} <{addresser(person.user.id, page_id)}>"
        return {"recipient": person.user.email, "subject": parts["subject"], "body_text": text, "body_html": html,
                "headers": headers}

    return fill


def _parts(event: ContentEvent, page: Page, space: Space, actor, base: str, slot: dict) -> dict:
    """Subject, text and HTML shared by every recipient (their link and reason are filled in after)."""
    from flask import render_template

    who = actor.full_name if actor else "Someone"
    what = "blog post" if page.is_blog else "page"
    context = {"event": event, "page": page, "space": space, "who": who, "what": what,
               "verb": VERBS[event.kind], "url": f"{base}/spaces/{space.key}/pages/{page.id}",
               "unwatch_url": slot["unwatch"], "reason": slot["reason"], "diff": [], "comment": None, "comment_html": ""}
    if not page.sensitive:
        if event.kind == "edited" and event.from_version:
            old = version(page, event.from_version)
            new = version(page, event.to_version or page.version)
            context["diff"] = diff_excerpt(old.body if old else "", new.body if new else page.body)
            context["versions"] = (event.from_version, event.to_version)
        elif event.kind == "created":
            context["excerpt"] = page.body[:1500]
        elif event.kind == "commented" and event.comment_id:
            context["comment"] = db.session.get(Comment, event.comment_id)
            context["comment_html"] = markdown(context["comment"].body) if context["comment"] else ""
    return {"subject": f"{space.name} › {page.title}",
            "text": render_template("notify/mail/notification.txt", **context),
            "html": inline_css(render_template("notify/mail/notification.html", **context))}
