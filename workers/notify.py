"""Notification jobs: fanning content events out to watchers, and the minute tick (coalesced edits, daily report)."""
from sqlalchemy import select

from webapp.extensions import db
from webapp.jobs import ready_for_more
from webapp.notify import fanout, report
from webapp.outgoing import delivery
from webapp.notify.events import FAN_OUT, wake_fan_out
from webapp.notify.models import ContentEvent
from webapp.timeutil import utcnow
from workers import job


@job
def fan_out_due() -> int:
    """Turn every due content event into queued mail, then help send it; safe to run in several workers at once.

    The mail's first batches went to a sender as they were committed. This worker then sends beside it in the
    same work horse: as a job of its own, picked up and forked, its first mail went ~0.1 s later (B6)."""
    ready_for_more(FAN_OUT)
    queued = fanout.fan_out_due()
    if queued:
        delivery.deliver_due()
    return queued


@job
def notify_tick() -> None:
    """Every minute from workers/cron.py: coalesced edits whose window ended, and the daily report."""
    due = db.session.scalar(select(ContentEvent.id).where(ContentEvent.fanned_out_at.is_(None),
                                                           ContentEvent.send_after <= utcnow()).limit(1))
    if due is not None:
        wake_fan_out()
    report.send_if_due()
    db.session.commit()


@job
def fetch_replies() -> None:
    """Every minute from workers/cron.py: replies to notifications become comments (when turned on)."""
    from webapp.notify.replies import fetch

    fetch()
