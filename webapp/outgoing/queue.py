"""The mail queue: rows in, a worker woken after commit; flush, resend, delete; what the admin page shows."""
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import delete, func, select, update

from webapp.errors import UserError
from webapp.extensions import db
from webapp.jobs import DELIVER_DUE, enqueue_after_commit
from webapp.outgoing.compose import message_id_host, new_message_id
from webapp.outgoing.models import (
    FAILED, QUEUED, SEALED_KINDS, SENDING, SENT, SUPPRESSED, OutboundMail, SmtpServerState,
)
from webapp.outgoing import stats
from webapp.outgoing.suppression import UNSUPPRESSED_KINDS, suppressed_among, suppression_of
from webapp.security import secret_box
from webapp.settings import base_url, retry_schedule
from webapp.timeutil import utcnow

WAKE = "send-mail"
WAITING_TOO_LONG = timedelta(minutes=30)
PAGE_SIZE = 50


# An address email_validator would hand back unchanged: a plain ASCII dot-atom before the @, a lower-case domain of
# letters, digits and single hyphens with a letters-only top-level label, not a special-use name.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*@"
                            r"(?:[a-z0-9]{1,63}(?:-[a-z0-9]+)*\.)+[a-z]{2,63}")
_SPECIAL_USE = tuple(sorted({"." + name for name in SPECIAL_USE_DOMAIN_NAMES}))


class QueueError(UserError):
    """A mail that cannot be queued as asked."""


def normalized_address(address: str) -> str:
    """email_validator's normalized form of `address` (EmailNotValidError if it is none). A fan-out asks this of
    every watcher, and most addresses are plain: those are recognised by one regular expression, 1 µs instead of
    validate_email's 27 (tests/outgoing/test_queue_addresses.py checks both agree)."""
    local, _at, domain = address.rpartition("@")
    if (len(address) <= 254 and len(local) <= 64 and len(domain) <= 253 and _PLAIN_ADDRESS.fullmatch(address)
            and all(len(label) <= 63 for label in domain.split(".")) and not ("." + domain).endswith(_SPECIAL_USE)):
        return address
    return validate_email(address, check_deliverability=False).normalized


def queue_mail(recipient: str, subject: str, body_text: str, body_html: str | None = None, *, actor=None,
               kind: str = "notification", headers: dict | None = None, server_key: str | None = None) -> OutboundMail:
    """One row per mail, in the caller's transaction; a worker is woken once that commits."""
    try:
        recipient = normalized_address(recipient)
    except EmailNotValidError as exc:
        raise QueueError(f"{recipient!r} is not a mail address: {exc}") from None
    if kind in SEALED_KINDS:  # a link that signs someone in is a secret: encrypted at rest like the others
        box = secret_box()
        body_text, body_html = box.encrypt(body_text), body_html and box.encrypt(body_html)
    mail = OutboundMail(recipient=recipient, subject=subject, body_text=body_text, body_html=body_html,
                        actor_id=getattr(actor, "id", None), kind=kind, headers=headers or {},
                        server_key=server_key, message_id=new_message_id(message_id_host(base_url())),
                        next_attempt_at=utcnow())
    _hold_if_suppressed([row := {"recipient": recipient, "kind": kind, "state": QUEUED}])
    if row["state"] == SUPPRESSED:
        mail.state, mail.last_error = SUPPRESSED, row["last_error"]
    db.session.add(mail)
    if mail.state != SUPPRESSED:
        wake_sender()
    return mail


def _hold_if_suppressed(rows: list[dict]) -> None:
    """Mail to an address suppressed after bounces is held, saying why (never invitations, resets or tests)."""
    candidates = [r for r in rows if r["state"] == QUEUED and r["kind"] not in UNSUPPRESSED_KINDS]
    held = suppressed_among(r["recipient"] for r in candidates) if candidates else set()
    reasons = {address: suppression_of(address).reason for address in held}
    for row in candidates:
        address = row["recipient"].lower()
        if address in held:
            row.update(state=SUPPRESSED, last_error=f"Held: mail to this address bounced ({reasons[address][:300]})")
    stats.add(suppressed=sum(r["recipient"].lower() in held for r in candidates))


def queue_many(mails: list[dict], *, actor=None, kind: str = "notification") -> int:
    """Many mails (dicts of recipient, subject, body_text, body_html, headers) in one statement, in the caller's
    transaction: a fan-out to thousands of watchers. An address that is not one cannot hold up the others: its
    mail goes straight to the error queue, saying why."""
    if not mails:
        return 0
    host, now = message_id_host(base_url()), utcnow()
    rows = []
    for mail in mails:
        row = {**mail, "kind": kind, "actor_id": getattr(actor, "id", None), "server_key": None,
               "message_id": new_message_id(host), "state": QUEUED, "attempts": 0, "next_attempt_at": now,
               "created_at": now, "failed_at": None, "last_error": None}
        try:
            row["recipient"] = normalized_address(mail["recipient"])
        except EmailNotValidError as exc:
            row.update(state=FAILED, failed_at=now, last_error=f"{mail['recipient']!r} is not a mail address: {exc}")
        rows.append(row)
    _hold_if_suppressed(rows)
    db.session.execute(OutboundMail.__table__.insert(), rows)  # Core: the ORM's bulk insert cost a quarter more a row
    wake_sender()
    return len(rows)


def wake_sender() -> None:
    """After commit, one waiting deliver_due job: more wakes while it waits add nothing."""
    enqueue_after_commit(DELIVER_DUE, once=WAKE, job_timeout=3600)


def flush() -> int:
    """Every queued mail is due now, and a worker is woken; returns how many are queued.

    Rows another transaction holds (a worker claiming them, another flush) are skipped, not waited for:
    waiting let two flushes and a claim deadlock on PostgreSQL.
    """
    now = utcnow()
    later = (select(OutboundMail.id).where(OutboundMail.state == QUEUED, OutboundMail.next_attempt_at > now)
             .order_by(OutboundMail.id))
    if db.engine.dialect.name == "postgresql":
        later = later.with_for_update(skip_locked=True)
    db.session.execute(update(OutboundMail).where(OutboundMail.id.in_(later.scalar_subquery()))
                       .values(next_attempt_at=now).execution_options(synchronize_session=False))
    # An admin's Flush tries the paused servers again too.
    db.session.execute(update(SmtpServerState).where(SmtpServerState.paused_until.is_not(None))
                       .values(paused_until=None))
    wake_sender()
    return db.session.scalar(select(func.count(OutboundMail.id)).where(OutboundMail.state == QUEUED))


def resend(ids: list[int]) -> int:
    """Mail from the error queue goes back to the queue, due now, with its attempts counted afresh."""
    result = db.session.execute(update(OutboundMail).where(OutboundMail.id.in_(ids), OutboundMail.state == FAILED)
                                .values(state=QUEUED, attempts=0, next_attempt_at=utcnow(), failed_at=None))
    if result.rowcount:
        wake_sender()
    return result.rowcount


def delete_failed(ids: list[int]) -> int:
    return db.session.execute(delete(OutboundMail).where(OutboundMail.id.in_(ids), OutboundMail.state == FAILED)
                              ).rowcount


def reclaim_stuck() -> int:
    """Rows whose worker died while sending go back to the queue, each reclaim counted as an attempt; a mail that
    has used up its attempts this way (it may be what kills the worker) goes to the error queue (the sweeper calls
    this)."""
    now = utcnow()
    limit = now - timedelta(seconds=current_app.config["MAIL_SENDING_TIMEOUT_SECONDS"])
    stuck = (OutboundMail.state == SENDING, OutboundMail.claimed_at < limit)
    last = len(retry_schedule())
    given_up = db.session.execute(
        update(OutboundMail).where(*stuck, OutboundMail.attempts >= last)
        .values(state=FAILED, claim_token=None, failed_at=now, attempts=OutboundMail.attempts + 1,
                last_error="The worker stopped while sending this mail, again: gave up.")).rowcount
    return given_up + db.session.execute(
        update(OutboundMail).where(*stuck)
        .values(state=QUEUED, claim_token=None, next_attempt_at=now, attempts=OutboundMail.attempts + 1,
                last_error="The worker stopped while sending this mail; it was queued again.")).rowcount


def due_count() -> int:
    return db.session.scalar(select(func.count(OutboundMail.id)).where(
        OutboundMail.state == QUEUED, OutboundMail.next_attempt_at <= utcnow()))


def forget_sent(days: int = 7, held_days: int = 30) -> int:
    """Sent mail is kept a week for the "Recently sent" list, then dropped; mail held for a suppressed address
    a month (released if its owner tries again in that time)."""
    now = utcnow()
    held = db.session.execute(delete(OutboundMail).where(
        OutboundMail.state == SUPPRESSED, OutboundMail.created_at < now - timedelta(days=held_days))).rowcount
    return held + db.session.execute(delete(OutboundMail).where(
        OutboundMail.state == SENT, OutboundMail.sent_at < now - timedelta(days=days))).rowcount


@dataclass
class Health:
    queued: int
    sending: int
    failed: int
    oldest: datetime | None
    waiting: int = 0  # queued, waiting for a server's limit or pause (not failing)
    suppressed: int = 0

    @property
    def waiting_too_long(self) -> bool:
        return self.oldest is not None and utcnow() - self.oldest > WAITING_TOO_LONG

    @property
    def warning(self) -> bool:
        return self.waiting_too_long or self.failed > 0


def health() -> Health:
    counts = dict(db.session.execute(select(OutboundMail.state, func.count(OutboundMail.id))
                                     .where(OutboundMail.state != SENT).group_by(OutboundMail.state)).all())
    oldest = db.session.scalar(select(func.min(OutboundMail.created_at))
                               .where(OutboundMail.state.in_([QUEUED, SENDING])))
    waiting = db.session.scalar(select(func.count(OutboundMail.id)).where(
        OutboundMail.state == QUEUED, OutboundMail.last_error.like("Waiting:%")))
    return Health(counts.get(QUEUED, 0), counts.get(SENDING, 0), counts.get(FAILED, 0), oldest, waiting,
                  counts.get(SUPPRESSED, 0))


def page_of(states: tuple[str, ...], page: int, order=None) -> tuple[list[OutboundMail], bool]:
    """One page of mail in `states` and whether another follows."""
    order = order if order is not None else (OutboundMail.id,)
    rows = list(db.session.scalars(select(OutboundMail).where(OutboundMail.state.in_(states)).order_by(*order)
                                   .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


def recently_sent(limit: int = 10) -> list[OutboundMail]:
    return list(db.session.scalars(select(OutboundMail).where(OutboundMail.state == SENT)
                                   .order_by(OutboundMail.sent_at.desc()).limit(limit)))
