"""Sending what is due: an atomic claim, one connection per server, failover, backoff and the error queue."""
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import bindparam, select, update

from webapp.auth.models import User
from webapp.extensions import db
from webapp.outgoing import bounces, compose, limits, signing, stats
from webapp.outgoing.models import FAILED, QUEUED, SENDING, SENT, OutboundMail, SmtpTest
from webapp.outgoing.queue import wake_sender
from webapp.outgoing.servers import ordered_profiles, profile_for
from webapp.outgoing.smtp import SmtpError, SmtpProfile, SmtpSession
from webapp.settings import SiteSettings, retry_schedule

log = logging.getLogger(__name__)
POISON_ATTEMPTS = 3  # unexpected failures (not an SMTP answer) of one mail before it goes to the error queue
# A server that cannot sign in until someone connects it again (or whose provider did not answer) holds its mail:
# it waits, uncounted, never to the error queue, and goes out after the reconnect (which flushes the queue).
WAIT_KINDS = ("reconnect_needed", "not_connected", "provider_unavailable", "provider_slow", "token_renewing")
WAIT_MINUTES = 5


def claim(limit: int) -> tuple[str, list[int]]:
    """Mark up to `limit` due rows as ours in one statement: two workers never claim one row."""
    token, now = uuid.uuid4().hex, limits.clock()
    due = (select(OutboundMail.id).where(OutboundMail.state == QUEUED, OutboundMail.next_attempt_at <= now)
           .order_by(OutboundMail.next_attempt_at, OutboundMail.id).limit(limit))
    if db.engine.dialect.name == "postgresql":
        # Locked and limited once, in a materialized CTE: as `id IN (subquery)` PostgreSQL may run the subquery
        # again for each row it updates, each run skipping the rows the last one took, and claim the whole queue.
        due = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        match = (OutboundMail.id == due.c.id, OutboundMail.state == QUEUED)
    else:
        # The ids alone: with "and still queued" beside them SQLite read the rows by the state index, every queued
        # row for each claim (10,000 queued: 6 ms a claim), not the claimed ones by id. One statement under the one
        # write lock, it sees no other writer between choosing and marking them.
        match = (OutboundMail.id.in_(due.scalar_subquery()),)
    ids = db.session.scalars(
        update(OutboundMail).where(*match)
        .values(state=SENDING, claim_token=token, claimed_at=now).returning(OutboundMail.id)
        .execution_options(synchronize_session=False)).all()
    db.session.commit()
    return token, sorted(ids)


def deliver_due() -> int:
    """Send due mail in batches until none is due; returns how many were sent. The connections stay open from one
    batch to the next (a sender that reconnects for every batch pays a TLS handshake and a sign-in each time)."""
    profiles = ordered_profiles()
    if not profiles:
        return 0  # nothing to send through: the mail waits, and the queue page says why
    now, paused = limits.clock(), limits.paused()
    if all(p.key in paused and paused[p.key].paused_until and paused[p.key].paused_until > now for p in profiles):
        return 0  # every server refused this client a moment ago: the mail waits for the pause to end
    sent, batch, pool = 0, current_app.config["MAIL_SEND_BATCH"], _Pool()
    try:
        while True:
            token, ids = claim(batch)  # (its commit also commits the last batch's last sent marks)
            if not ids:
                return sent
            if len(ids) == batch:  # more is due: an idle worker joins in (sending waits on the server, not on us)
                wake_sender()
                db.session.commit()
            sent += send_batch(token, ids, profiles, pool, commit_last=False)
    finally:
        pool.close()


class _Pool:
    """The senders' view of each server: its open session, its pause, its rate limit and connection slot.

    A server that failed to open, or refused the session, is skipped until the pool is dropped (a poison mail)
    or its pause ends.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, SmtpSession] = {}
        self.down: dict[str, SmtpError] = {}
        self.rates: dict[str, limits.RateLimit] = {}
        self.slots: dict[str, limits.ConnectionSlot] = {}
        self.paused: dict = {}  # read by refresh() at each batch
        self.worked: set[str] = set()

    def refresh(self) -> None:
        """At each batch: pauses other senders set; a server that failed (and is not paused) gets another chance."""
        self.paused, self.down = limits.paused(), {}

    def wait_for(self, profile: SmtpProfile) -> tuple[datetime, str] | None:
        """(until when, why) this mail must wait for `profile`, or None when it may go now."""
        if self.is_paused(profile):
            state = self.paused[profile.key]
            return state.paused_until, f"{profile.name} is paused until {state.paused_until:%H:%M} UTC: " \
                                       f"{state.pause_reason}"
        if profile.max_per_minute:
            rate = self.rates.setdefault(profile.key, limits.RateLimit(profile.key, profile.max_per_minute))
            later = rate.take()
            if later is not None:
                return later, f"the limit of {profile.max_per_minute:,} mails a minute on {profile.name}"
        return None

    def is_paused(self, profile: SmtpProfile) -> bool:
        state = self.paused.get(profile.key)
        return state is not None and state.paused_until is not None and state.paused_until > limits.clock()

    def get(self, profile: SmtpProfile) -> SmtpSession:
        if profile.key in self.down:
            raise self.down[profile.key]
        session = self.sessions.get(profile.key)
        if session is None or session.conn is None:
            if profile.max_connections:
                slot = self.slots.setdefault(profile.key, limits.ConnectionSlot(profile, profile.max_connections))
                if not slot.take():
                    n = profile.max_connections
                    raise SmtpError("connections_in_use", f"{profile.name} allows {n} connection{'' if n == 1 else 's'}"
                                    ", all in use by other senders.")
            try:
                session = SmtpSession(profile).open()
            except SmtpError as exc:
                self.down[profile.key] = exc
                self._release_slot(profile.key)
                raise
            self.sessions[profile.key] = session
        return session

    def refused_session(self, profile: SmtpProfile, exc: SmtpError) -> datetime:
        """The server refused this client: no more mail to it from this sender, and none from the others."""
        self.down[profile.key] = exc
        self._release_slot(profile.key)
        until = limits.pause(profile.key, exc.message)
        self.paused = limits.paused()
        return until

    def took(self, profile: SmtpProfile) -> None:
        """A server paused lately took mail: its next pause starts from one minute again. (No write otherwise: on
        SQLite any UPDATE would hold the one write lock until the next commit.)"""
        if profile.key not in self.worked and profile.key in self.paused:
            self.worked.add(profile.key)
            limits.recovered(profile.key)

    def _release_slot(self, key: str) -> None:
        slot = self.slots.pop(key, None)
        if slot is not None:
            slot.release()

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        for rate in self.rates.values():
            rate.give_back()
        for key in list(self.slots):
            self._release_slot(key)
        self.sessions = {}


_FIELDS = ("id", "kind", "recipient", "subject", "body_text", "body_html", "headers", "message_id", "actor_id",
           "server_key", "attempts", "created_at")


def send_batch(token: str, ids: list[int], profiles: list[SmtpProfile], pool: _Pool | None = None,
               commit_last: bool = True) -> int:
    """Send the claimed rows `ids`; how many were sent. Outcomes are committed in groups (_Marks); without
    `commit_last` the last group is written and left to the caller's next commit (its next claim: one commit, and
    on SQLite one fsync, where there were two)."""
    # Rows as plain tuples (columns, not ORM entities: those cost ~50 µs each to load, and the group commits below
    # would expire them and reload each one).
    table = OutboundMail.__table__
    rows = db.session.execute(select(*(table.c[name] for name in _FIELDS))
                              .where(table.c.id.in_(ids), table.c.claim_token == token).order_by(table.c.id)).all()
    actor_ids = {r.actor_id for r in rows if r.actor_id}
    actors = {u.id: SimpleNamespace(full_name=u.full_name, email=u.email)
              for u in db.session.scalars(select(User).where(User.id.in_(actor_ids)))} if actor_ids else {}
    context = _Context(SiteSettings.get().site_title, retry_schedule(), bounces.envelope_sender(), signing.signer(),
                       actors)
    own_pool = pool is None
    pool = pool or _Pool()
    pool.refresh()
    marks = _Marks(token, current_app.config["MAIL_MARK_EVERY"], commit_last)
    db.session.commit()
    try:
        for index, row in enumerate(rows):
            context.next_row = rows[index + 1] if index + 1 < len(rows) else None
            candidates = profiles
            if row.server_key:
                pinned = profile_for(row.server_key)
                candidates = [pinned] if pinned else profiles
            try:
                outcome = _attempt(row, candidates, pool, actors.get(row.actor_id), context)
            except Exception as exc:  # one poison mail must not stop the batch nor leave it "sending"
                log.exception("sending mail %s failed unexpectedly", row.id)
                for session in pool.sessions.values():
                    session.close()  # the conversation may be half way through a command: start afresh
                outcome = _unexpected(row, exc, context.schedule)
            marks.add(row, outcome, last=index == len(rows) - 1)
    except BaseException:
        marks.flush()
        raise
    else:
        marks.flush(commit=commit_last)
    finally:
        if own_pool:
            pool.close()
    return marks.sent


@dataclass
class _Context:
    site_name: str
    schedule: list[int]
    envelope: object  # mail id -> envelope sender (VERP), or None: the server's From address
    sign: object  # (bytes, from address) -> signed bytes
    actors: dict
    next_row: object = None  # the batch's next mail, which the session may announce behind this one
    ahead: tuple | None = None  # ((mail id, server key), envelope sender, bytes): the next mail, made already

    def compose(self, row, profile: SmtpProfile, actor) -> tuple[str, bytes]:
        """(envelope sender, signed bytes) of `row` through `profile`; ValueError or TypeError if it cannot be."""
        made, self.ahead = self.ahead, None
        if made is not None and made[0] == (row.id, profile.key):
            return made[1], made[2]
        sender, data = compose.build(row, profile, actor, self.site_name)
        return self.envelope(row.id) or sender, self.sign(data, profile.from_address)

    def announce(self, session: SmtpSession, profile: SmtpProfile) -> tuple[str, str] | None:
        """The next mail's envelope, for a pipelining session to write behind this message (one round trip a mail
        instead of two); None when that mail may well go elsewhere or later (a mail for one server, a server with
        a rate limit)."""
        row = self.next_row
        if row is None or row.server_key or profile.max_per_minute or not session.pipelines:
            return None
        return self.envelope(row.id) or profile.from_address, row.recipient

    def make_next(self, profile: SmtpProfile) -> None:
        """Compose the next mail while the server reads this one. One that cannot be made is left to its own
        attempt, which fails it and says why (its announced envelope then ends the session, unsent): nothing
        raised here may reach this mail, which is written already and may well be delivered."""
        row = self.next_row
        try:
            self.ahead = None
            self.ahead = ((row.id, profile.key), *self.compose(row, profile, self.actors.get(row.actor_id)))
        except Exception:  # noqa: BLE001 (see above)
            self.ahead = None


class _Marks:
    """Outcomes written in groups: one commit per `every` mails or per second, whichever comes first.

    A worker killed mid-group leaves those rows "sending"; the sweeper queues them again, so a crash can
    resend at most one group and loses nothing. A commit per mail made the commits the bottleneck
    (docs/benchmarks.md, B6).
    """

    def __init__(self, token: str, every: int, commit_last: bool = True) -> None:
        self.token, self.every, self.pending, self.sent, self.since = token, max(every, 1), [], 0, time.monotonic()
        self.commit_last = commit_last

    def add(self, row, values: dict, last: bool = False) -> None:
        self.pending.append((row, values))
        self.sent += values["state"] == SENT
        if (len(self.pending) >= self.every or time.monotonic() - self.since > 1) and (self.commit_last or not last):
            self.flush()

    def flush(self, commit: bool = True) -> None:
        groups: dict[tuple, list[dict]] = {}  # one executemany per set of columns (sent, retry, failed)
        counts = {"sent": 0, "waited": 0, "retried": 0, "failed": 0}
        for row, values in self.pending:
            params = {"b_id": row.id, "claim_token": None, "attempts": row.attempts + 1, **values}
            groups.setdefault(tuple(sorted(values)), []).append(params)
            state = values["state"]
            counts["sent" if state == SENT else "failed" if state == FAILED else
                   "waited" if params["attempts"] == row.attempts else "retried"] += 1
            if row.kind == "test" and state != QUEUED:
                _record_test(row, values)
        table = OutboundMail.__table__
        for params in groups.values():
            db.session.connection().execute(
                table.update().where(table.c.id == bindparam("b_id"), table.c.claim_token == self.token), params)
        if self.pending:
            stats.add(**counts)
        if commit:
            db.session.commit()
        self.pending, self.since = [], time.monotonic()


def _attempt(row, candidates: list[SmtpProfile], pool: _Pool, actor, context: _Context) -> dict:
    """Try each server in turn while failures are transient; the new column values of the row."""
    notes, waits, refused = [], [], False
    for profile in candidates:
        wait = pool.wait_for(profile)
        if wait is not None:  # paused, or over its limit: this server is not tried, nor counted as a failure
            waits.append(wait)
            notes.append(wait[1])
            refused = refused or pool.is_paused(profile)
            continue
        try:
            envelope, data = context.compose(row, profile, actor)
        except (ValueError, TypeError) as exc:
            return _failed(f"The mail could not be built: {exc}")
        try:
            session = pool.get(profile)
            then = context.announce(session, profile)
            reply = session.send(envelope, row.recipient, data, then, then and (lambda: context.make_next(profile)))
        except SmtpError as exc:
            if exc.kind == "timeout":
                pool.down[profile.key] = exc  # a stalled server would make every mail of the batch wait
            if exc.concerns_session:  # the rest of the batch would meet it too: it waits or fails over as a group
                waits.append((pool.refused_session(profile, exc), f"{profile.name}: {exc.message}"))
                notes.append(waits[-1][1])
                refused = True
                continue
            if exc.kind == "connections_in_use":
                waits.append((limits.clock() + timedelta(seconds=30), exc.message))
                notes.append(exc.message)
                continue
            if not exc.transient:
                return _failed(f"{profile.name}: {exc.message}")
            notes.append(f"{profile.name}: {exc.message}")
            if exc.kind in WAIT_KINDS:
                waits.append((limits.clock() + timedelta(minutes=WAIT_MINUTES), notes[-1]))
            continue
        pool.took(profile)
        return {"state": SENT, "sent_at": limits.clock(), "sent_via": profile.name[:120],
                "server_reply": reply[:500], "last_error": "; ".join(notes) or None}
    if refused and limits.clock() - row.created_at > timedelta(minutes=sum(context.schedule)):
        return _failed("Gave up: refused by the server for longer than the retry schedule. " + "; ".join(notes))
    if waits:  # a server that will take it later (a pause, a limit, a sign-in to renew): it waits, uncounted
        return {"state": QUEUED, "next_attempt_at": min(until for until, _why in waits), "attempts": row.attempts,
                "last_error": "Waiting: " + "; ".join(notes)}
    attempt = row.attempts + 1
    if attempt > len(context.schedule):
        return _failed(f"Gave up after {attempt} attempts. " + "; ".join(notes))
    return {"state": QUEUED, "next_attempt_at": limits.clock() + timedelta(minutes=context.schedule[attempt - 1]),
            "last_error": "; ".join(notes)}


def _unexpected(row, exc: Exception, schedule: list[int]) -> dict:
    """An error no SMTP server explains: counted like any attempt, and to the error queue after a few."""
    attempt = row.attempts + 1
    what = f"Sending failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}); the worker log has the details."
    if attempt >= POISON_ATTEMPTS or attempt > len(schedule):
        return _failed(f"{what} Gave up after {attempt} attempts.")
    return {"state": QUEUED, "next_attempt_at": limits.clock() + timedelta(minutes=schedule[attempt - 1]),
            "last_error": what}


def _record_test(row: OutboundMail, values: dict) -> None:
    """A test email sent through the queue reports its outcome as the server's last test result."""
    ok = values["state"] == SENT
    result = {"ok": ok, "via_queue": True, "reply": values.get("server_reply"), "kind": None if ok else "failed",
              "message": values.get("last_error") or "", "hint": "", "transcript": []}
    db.session.execute(update(SmtpTest).where(SmtpTest.mail_id == row.id).values(result=result))


def _failed(message: str) -> dict:
    return {"state": FAILED, "failed_at": limits.clock(), "last_error": message}
