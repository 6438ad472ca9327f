"""Notification jobs: fanning content events out to watchers, and the minute tick (coalesced edits, daily report)."""
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import current_app
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
    """Turn every due content event into queued mail, and send it meanwhile; safe to run in several workers at once.

    The fan-out runs in a thread of this job (its own app context, so its own session) and the job sends from its
    first committed batch on, beside the sender that batch woke: one page watched by 10,000 people kept this
    worker fanning out for 0.8 s before it sent anything, with one connection of the two at work (B6)."""
    ready_for_more(FAN_OUT)
    app, first = current_app._get_current_object(), threading.Event()

    def fan_out() -> int:
        with app.app_context():
            try:
                return fanout.fan_out_due(committed=first.set)
            finally:
                first.set()
                db.session.remove()

    with delivery.quick_switches(), ThreadPoolExecutor(1, thread_name_prefix="fan-out") as pool:
        running = pool.submit(fan_out)
        first.wait()
        if not running.done() or running.result():
            delivery.deliver_due()
        queued = running.result()
    if queued:
        delivery.deliver_due()  # what was queued after this sender's last claim, if anything
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
