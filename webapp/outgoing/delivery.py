"""Sending what is due: an atomic claim, one connection per server, failover, backoff and the error queue."""
import logging
import time
import uuid
from types import SimpleNamespace
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, select, update

from webapp.auth.models import User
from webapp.extensions import db
from webapp.outgoing import compose
from webapp.outgoing.models import FAILED, QUEUED, SENDING, SENT, OutboundMail, SmtpTest
from webapp.outgoing.queue import wake_sender
from webapp.outgoing.servers import ordered_profiles, profile_for
from webapp.outgoing.smtp import SmtpError, SmtpProfile, SmtpSession
from webapp.settings import SiteSettings, retry_schedule
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)
POISON_ATTEMPTS = 3  # unexpected failures (not an SMTP answer) of one mail before it goes to the error queue
# A server that cannot sign in until someone connects it again (or whose provider did not answer) holds its mail:
# it waits, uncounted, never to the error queue, and goes out after the reconnect (which flushes the queue).
WAIT_KINDS = ("reconnect_needed", "not_connected", "provider_unavailable", "provider_slow", "token_renewing")
WAIT_MINUTES = 5


def claim(limit: int) -> tuple[str, list[int]]:
    """Mark up to `limit` due rows as ours in one statement: two workers never claim one row."""
    token, now = uuid.uuid4().hex, utcnow()
    due = (select(OutboundMail.id).where(OutboundMail.state == QUEUED, OutboundMail.next_attempt_at <= now)
           .order_by(OutboundMail.next_attempt_at, OutboundMail.id).limit(limit))
    if db.engine.dialect.name == "postgresql":
        # Locked and limited once, in a materialized CTE: as `id IN (subquery)` PostgreSQL may run the subquery
        # again for each row it updates, each run skipping the rows the last one took, and claim the whole queue.
        due = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        match = OutboundMail.id == due.c.id
    else:
        match = OutboundMail.id.in_(due.scalar_subquery())
    ids = db.session.scalars(
        update(OutboundMail).where(match, OutboundMail.state == QUEUED)
        .values(state=SENDING, claim_token=token, claimed_at=now).returning(OutboundMail.id)
        .execution_options(synchronize_session=False)).all()
    db.session.commit()
    return token, sorted(ids)


def deliver_due() -> int:
    """Send due mail in batches until none is due; returns how many were sent."""
    profiles = ordered_profiles()
    if not profiles:
        return 0  # nothing to send through: the mail waits, and the queue page says why
    sent, batch = 0, current_app.config["MAIL_SEND_BATCH"]
    while True:
        token, ids = claim(batch)
        if not ids:
            return sent
        if len(ids) == batch:  # more is due: an idle worker joins in (sending waits on the server, not on us)
            wake_sender()
            db.session.commit()
        sent += send_batch(token, ids, profiles)


class _Pool:
    """One open session per server for the batch; a server that failed to open is skipped for the batch."""

    def __init__(self) -> None:
        self.sessions: dict[str, SmtpSession] = {}
        self.down: dict[str, SmtpError] = {}

    def get(self, profile: SmtpProfile) -> SmtpSession:
        if profile.key in self.down:
            raise self.down[profile.key]
        session = self.sessions.get(profile.key)
        if session is None or session.conn is None:
            try:
                session = SmtpSession(profile).open()
            except SmtpError as exc:
                self.down[profile.key] = exc
                raise
            self.sessions[profile.key] = session
        return session

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


_FIELDS = ("id", "kind", "recipient", "subject", "body_text", "body_html", "headers", "message_id", "actor_id",
           "server_key", "attempts")


def send_batch(token: str, ids: list[int], profiles: list[SmtpProfile]) -> int:
    # Plain copies: the group commits below would otherwise expire the ORM rows and reload each one.
    rows = [SimpleNamespace(**{c: getattr(r, c) for c in _FIELDS}) for r in db.session.scalars(
        select(OutboundMail).where(OutboundMail.id.in_(ids), OutboundMail.claim_token == token)
        .order_by(OutboundMail.id))]
    actor_ids = {r.actor_id for r in rows if r.actor_id}
    actors = {u.id: SimpleNamespace(full_name=u.full_name, email=u.email)
              for u in db.session.scalars(select(User).where(User.id.in_(actor_ids)))} if actor_ids else {}
    site_name = SiteSettings.get().site_title
    schedule = retry_schedule()
    pool, marks = _Pool(), _Marks(token, current_app.config["MAIL_MARK_EVERY"])
    db.session.commit()
    try:
        for row in rows:
            candidates = profiles
            if row.server_key:
                pinned = profile_for(row.server_key)
                candidates = [pinned] if pinned else profiles
            try:
                outcome = _attempt(row, candidates, pool, actors.get(row.actor_id), site_name, schedule)
            except Exception as exc:  # one poison mail must not stop the batch nor leave it "sending"
                log.exception("sending mail %s failed unexpectedly", row.id)
                pool.close()  # the conversation may be half way through a command: start afresh
                pool = _Pool()
                outcome = _unexpected(row, exc, schedule)
            marks.add(row, outcome)
    finally:
        marks.flush()
        pool.close()
    return marks.sent


class _Marks:
    """Outcomes written in groups: one commit per `every` mails or per second, whichever comes first.

    A worker killed mid-group leaves those rows "sending"; the sweeper queues them again, so a crash can
    resend at most one group and loses nothing. A commit per mail made the commits the bottleneck
    (docs/benchmarks.md, B6).
    """

    def __init__(self, token: str, every: int) -> None:
        self.token, self.every, self.pending, self.sent, self.since = token, max(every, 1), [], 0, time.monotonic()

    def add(self, row: OutboundMail, values: dict) -> None:
        self.pending.append((row, values))
        self.sent += values["state"] == SENT
        if len(self.pending) >= self.every or time.monotonic() - self.since > 1:
            self.flush()

    def flush(self) -> None:
        groups: dict[tuple, list[dict]] = {}  # one executemany per set of columns (sent, retry, failed)
        for row, values in self.pending:
            groups.setdefault(tuple(sorted(values)), []).append(
                {"b_id": row.id, "claim_token": None, "attempts": row.attempts + 1, **values})
            if row.kind == "test" and values["state"] != QUEUED:
                _record_test(row, values)
        table = OutboundMail.__table__
        for params in groups.values():
            db.session.connection().execute(
                table.update().where(table.c.id == bindparam("b_id"), table.c.claim_token == self.token), params)
        db.session.commit()
        self.pending, self.since = [], time.monotonic()


def _attempt(row: OutboundMail, candidates: list[SmtpProfile], pool: _Pool, actor, site_name: str,
             schedule: list[int]) -> dict:
    """Try each server in turn while failures are transient; the new column values of the row."""
    notes, waiting = [], False
    for profile in candidates:
        try:
            sender, data = compose.build(row, profile, actor, site_name)
        except (ValueError, TypeError) as exc:
            return _failed(f"The mail could not be built: {exc}")
        try:
            reply = pool.get(profile).send(sender, row.recipient, data)
        except SmtpError as exc:
            if exc.kind == "timeout":
                pool.down[profile.key] = exc  # a stalled server would make every mail of the batch wait
            if not exc.transient:
                return _failed(f"{profile.name}: {exc.message}")
            notes.append(f"{profile.name}: {exc.message}")
            waiting = waiting or exc.kind in WAIT_KINDS
            continue
        return {"state": SENT, "sent_at": utcnow(), "sent_via": profile.name[:120], "server_reply": reply[:500],
                "last_error": "; ".join(notes) or None}
    if waiting:
        return {"state": QUEUED, "next_attempt_at": utcnow() + timedelta(minutes=WAIT_MINUTES),
                "attempts": row.attempts, "last_error": "Waiting: " + "; ".join(notes)}
    attempt = row.attempts + 1
    if attempt > len(schedule):
        return _failed(f"Gave up after {attempt} attempts. " + "; ".join(notes))
    return {"state": QUEUED, "next_attempt_at": utcnow() + timedelta(minutes=schedule[attempt - 1]),
            "last_error": "; ".join(notes)}


def _unexpected(row, exc: Exception, schedule: list[int]) -> dict:
    """An error no SMTP server explains: counted like any attempt, and to the error queue after a few."""
    attempt = row.attempts + 1
    what = f"Sending failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}); the worker log has the details."
    if attempt >= POISON_ATTEMPTS or attempt > len(schedule):
        return _failed(f"{what} Gave up after {attempt} attempts.")
    return {"state": QUEUED, "next_attempt_at": utcnow() + timedelta(minutes=schedule[attempt - 1]),
            "last_error": what}


def _record_test(row: OutboundMail, values: dict) -> None:
    """A test email sent through the queue reports its outcome as the server's last test result."""
    ok = values["state"] == SENT
    result = {"ok": ok, "via_queue": True, "reply": values.get("server_reply"), "kind": None if ok else "failed",
              "message": values.get("last_error") or "", "hint": "", "transcript": []}
    db.session.execute(update(SmtpTest).where(SmtpTest.mail_id == row.id).values(result=result))


def _failed(message: str) -> dict:
    return {"state": FAILED, "failed_at": utcnow(), "last_error": message}
