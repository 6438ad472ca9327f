"""Sending jobs: deliver what is due, the sweeper that makes a lost wake-up harmless, Send Test Email."""
import logging

from webapp.extensions import db
from webapp.jobs import JobRun, ready_for_more, redis_connection
from webapp.outgoing import delivery, queue
from workers import job, tracked

log = logging.getLogger(__name__)


@job
def deliver_due() -> int:
    """Claim and send due mail until none is due; safe to run in several workers at once."""
    ready_for_more(queue.WAKE)
    return delivery.deliver_due()


@job
def sweep_queue() -> None:
    """Every minute from workers/cron.py: rows stuck in "sending" go back, and due rows wake a sender.

    So a flushed or restarted Redis loses nothing: the rows are the queue.
    """
    reclaimed = queue.reclaim_stuck()
    queue.forget_sent()
    if reclaimed:
        log.warning("%d mail(s) were stuck in sending and were queued again", reclaimed)
    if queue.due_count():
        redis_connection().delete("spacemail:waiting:" + queue.WAKE)  # a lost job must not block the next
        queue.wake_sender()
    db.session.commit()


@tracked
def send_test_email(run: JobRun) -> None:
    """Send one test email straight to one server and keep the conversation for the admin."""
    from webapp.outgoing.testing import run_test

    run_test(run)


@job
def fetch_bounces() -> int:
    """Every minute from workers/cron.py: bounces are matched to their mail and scored (when turned on)."""
    from webapp.outgoing.bounces import fetch

    return fetch()
