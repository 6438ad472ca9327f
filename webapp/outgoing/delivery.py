"""Sending what is due: an atomic claim, one connection per server, failover, backoff and the error queue."""
import contextlib
import functools
import logging
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import Integer, bindparam, select, update

from webapp.auth.models import User
from webapp.extensions import db
from webapp.outgoing import bounces, compose, limits, signing, stats
from webapp.outgoing.models import FAILED, QUEUED, SENDING, SENT, OutboundMail, SmtpTest
from webapp.outgoing.queue import wake_sender
from webapp.outgoing.servers import ordered_profiles, profile_for
from webapp.outgoing.smtp import SmtpError, SmtpProfile, SmtpSession
from webapp.settings import SiteSettings, retry_schedule
from webapp.timeutil import UTCDateTime

log = logging.getLogger(__name__)
POISON_ATTEMPTS = 3  # unexpected failures (not an SMTP answer) of one mail before it goes to the error queue
# A server that cannot sign in until someone connects it again (or whose provider did not answer) holds its mail:
# it waits, uncounted, never to the error queue, and goes out after the reconnect (which flushes the queue).
WAIT_KINDS = ("reconnect_needed", "not_connected", "provider_unavailable", "provider_slow", "token_renewing")
WAIT_MINUTES = 5
# How often a thread holding the interpreter lets another have it (Python's default: 5 ms) while mail is sent: the
# conversation's thread, woken by the server's reply, gets it back from the store's (or a fan-out's) within 0.2 ms
# (its connection stood still up to 5 ms when a claim was being read, and a fan-out beside it delayed its start
# by half a second).
QUICK_SWITCH = 0.0002
SETTINGS_EVERY = 1.0  # seconds a sender goes on the settings it read (and other senders' pauses)
LOOKAHEAD = 40  # mails before a batch's end when the next is claimed: at ~1 ms a mail, past a claim's usual wait


def claim(limit: int, fields: tuple[str, ...] = ("id",)) -> tuple[str, list]:
    """Mark up to `limit` due rows as ours in one statement (two workers never claim one row), committed: (its
    token, the claimed rows' `fields` as the claim left them, in id order)."""
    token = uuid.uuid4().hex
    rows = db.session.execute(_claim_statement(db.engine.dialect.name, fields),
                              {"now": limits.clock(), "token": token, "limit": limit}).all()
    db.session.commit()
    return token, sorted(rows, key=lambda row: row.id)


@functools.cache
def _claim_statement(dialect: str, fields: tuple[str, ...]):
    """The claim, returning `fields` of each row it marks (no second statement to read them: that cost a fifth of
    a sender's database time); made once per database and fields (its cache key was worked out again for every
    batch)."""
    now = bindparam("now", type_=UTCDateTime)
    due = (select(OutboundMail.id).where(OutboundMail.state == QUEUED, OutboundMail.next_attempt_at <= now)
           .order_by(OutboundMail.next_attempt_at, OutboundMail.id).limit(bindparam("limit", type_=Integer)))
    if dialect == "postgresql":
        # Locked and limited once, in a materialized CTE: as `id IN (subquery)` PostgreSQL may run the subquery
        # again for each row it updates, each run skipping the rows the last one took, and claim the whole queue.
        due = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        match = (OutboundMail.id == due.c.id, OutboundMail.state == QUEUED)
    else:
        # The ids alone: with "and still queued" beside them SQLite read the rows by the state index, every queued
        # row for each claim (10,000 queued: 6 ms a claim), not the claimed ones by id. One statement under the one
        # write lock, it sees no other writer between choosing and marking them.
        match = (OutboundMail.id.in_(due.scalar_subquery()),)
    return (update(OutboundMail).where(*match)
            .values(state=SENDING, claim_token=bindparam("token"), claimed_at=now)
            .returning(*(_TABLE.c[name] for name in fields)).execution_options(synchronize_session=False))


def deliver_due() -> int:
    """Send due mail until none is due; returns how many were sent.

    The connections stay open from one batch to the next, and the database work (claiming the next batch, writing
    the outcomes) is done beside the conversation by a thread of the sender's own (_Store): a sender that did it in
    turn held its connection still ~15 ms every 100 mails, waiting on SQLite's one write lock (docs/benchmarks.md,
    B6). Where the server pipelines, the next mail is composed while the server reads this one."""
    db.session.commit()  # the caller's work is visible to the store's own connection (and holds no lock)
    profiles = ordered_profiles()
    now, paused = limits.clock(), limits.paused()
    db.session.commit()
    if not profiles:
        return 0  # nothing to send through: the mail waits, and the queue page says why
    if all(p.key in paused and paused[p.key].paused_until and paused[p.key].paused_until > now for p in profiles):
        return 0  # every server refused this client a moment ago: the mail waits for the pause to end
    with quick_switches():
        return _send(profiles)


@contextlib.contextmanager
def quick_switches():
    """While mail is sent, a thread holding the interpreter lets another have it every QUICK_SWITCH seconds."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(QUICK_SWITCH)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)


def _send(profiles: list[SmtpProfile]) -> int:
    """deliver_due's sending: batches claimed by the store's thread, sent through `profiles`; how many were sent."""
    pool, store = _Pool(), _Store(current_app._get_current_object())
    context, marks = _Context(), _Marks(current_app.config["MAIL_MARK_EVERY"], store)
    batch_size = current_app.config["MAIL_SEND_BATCH"]
    try:
        memo: dict = {}  # the store's, across the run's claims
        upcoming = store.submit(_claim_batch, batch_size, memo)
        while True:
            batch = upcoming.result()
            if not batch.rows:
                break
            upcoming = None
            context.take(batch)
            pool.next_batch(batch.paused)
            for index, row in enumerate(batch.rows):
                if upcoming is None and len(batch.rows) - index <= LOOKAHEAD:
                    # The next batch is claimed and read while the last of this one go (not sooner: mail a fan-out
                    # is still queueing would be missed, and the batch end up short).
                    upcoming = store.submit(_claim_batch, batch_size, memo)
                following = batch.rows[index + 1] if index + 1 < len(batch.rows) else None
                if following is None and upcoming.done() and upcoming.exception() is None:
                    following = next(iter(upcoming.result().rows), None)  # announced across the batches
                context.next_row = following
                candidates = profiles
                if row.server_key:
                    pinned = profile_for(row.server_key)
                    db.session.commit()
                    candidates = [pinned] if pinned else profiles
                try:
                    outcome = _attempt(row, candidates, pool, context.actors.get(row.actor_id), context)
                except Exception as exc:  # one poison mail must not stop the rest nor leave it "sending"
                    log.exception("sending mail %s failed unexpectedly", row.id)
                    db.session.rollback()
                    for session in pool.sessions.values():
                        session.close()  # the conversation may be half way through a command: start afresh
                    outcome = _unexpected(row, exc, context.schedule)
                marks.add(batch.token, row, outcome)
        marks.flush()
        return marks.wait()
    except BaseException:
        marks.flush()  # the outcomes known so far are written before the error goes on
        marks.wait(raising=False)
        raise
    finally:
        pool.close()
        store.close()


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
        self.paused: dict = {}  # server key -> its pause (paused_until, pause_reason), read again with each batch
        self.worked: set[str] = set()

    def next_batch(self, paused: dict) -> None:
        """At each batch: the pauses as its claim read them (other senders' too), but not older than what this
        sender knows (the claim may have been read before this sender paused a server); and a server that failed
        to open, if not paused, gets another go."""
        for key, mine in self.paused.items():
            theirs = paused.get(key)
            if mine.paused_until and (theirs is None or not theirs.paused_until
                                      or theirs.paused_until < mine.paused_until):
                paused[key] = mine
        self.paused, self.down = paused, {}

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
        self.paused = _pauses()
        db.session.commit()
        return until

    def took(self, profile: SmtpProfile) -> None:
        """A server paused lately took mail: its next pause starts from one minute again. (No write otherwise: on
        SQLite any UPDATE holds the one write lock until its commit.)"""
        if profile.key not in self.worked and profile.key in self.paused:
            self.worked.add(profile.key)
            limits.recovered(profile.key)
            db.session.commit()

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


class _Store:
    """A sender's database work, in a thread of its own with its own app context (so its own session and
    connection), one task at a time in the order given: a claim, or a group of outcomes, that waits for a lock
    never holds up the SMTP conversation. The main thread touches the database only for rare things (a server
    paused, a pinned server looked up), each committed at once so it holds no lock the store would wait for."""

    def __init__(self, app) -> None:
        self.app, self.context = app, None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mail-store", initializer=self._enter)

    def _enter(self) -> None:
        self.context = self.app.app_context()
        self.context.push()

    def submit(self, task, *args) -> Future:
        return self.executor.submit(self._run, task, *args)

    @staticmethod
    def _run(task, *args):
        try:
            return task(*args)
        except BaseException:
            db.session.rollback()
            raise

    def close(self) -> None:
        def leave():
            db.session.remove()
            if self.context is not None:
                self.context.pop()
        self.executor.submit(leave).result()
        self.executor.shutdown()


@dataclass
class _Batch:
    token: str
    rows: list
    paused: dict  # server key -> its pause (plain values)
    settings: tuple  # (site name, retry schedule, envelope sender function, DKIM signer)
    actors: dict


def _claim_batch(size: int, memo: dict) -> _Batch:
    """(In the store's thread.) The next batch: claimed, its rows as the claim returns them (plain tuples of
    columns, not ORM entities: those cost ~50 µs each), with what composing it needs; a full one wakes another
    sender.

    What composing needs (the site's name, the retry schedule, bounce addresses, DKIM keys, the servers' pauses)
    is read at most once a second and the people the mail is from once a run (`memo`, one per run), not for every
    batch (4.0 -> 3.5 ms of CPU a claim of 100, with the claim's statement made once too)."""
    token, rows = claim(size, _FIELDS)
    if len(rows) == size:  # more is due: an idle worker joins in (sending waits on the server, not on us)
        wake_sender()
        db.session.commit()
    actors = memo.setdefault("actors", {})
    new = {r.actor_id for r in rows if r.actor_id} - actors.keys()
    if new:
        actors.update({u.id: SimpleNamespace(full_name=u.full_name, email=u.email)
                       for u in db.session.scalars(select(User).where(User.id.in_(new)))})
    if time.monotonic() - memo.get("read_at", -SETTINGS_EVERY) >= SETTINGS_EVERY:
        settings = SiteSettings.get()
        memo.update(read_at=time.monotonic(), paused=_pauses(), settings=(
            settings.site_title, retry_schedule(settings), bounces.envelope_sender(), signing.signer()))
    db.session.commit()
    return _Batch(token, rows, dict(memo["paused"]), memo["settings"], actors)


_TABLE = OutboundMail.__table__
# Made once, not for each group (SQLAlchemy works a new statement's cache key out again each time).
_MARK = _TABLE.update().where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.claim_token == bindparam("b_token"))


def _pauses() -> dict:
    """The servers' pauses as plain values (read in one thread, used in another)."""
    return {key: SimpleNamespace(paused_until=s.paused_until, pause_reason=s.pause_reason)
            for key, s in limits.paused().items()}


class _Context:
    """What composing needs (the site's name, the retry schedule, bounce addresses, DKIM keys: as of the batch's
    claim), and the mail that goes next."""

    def __init__(self) -> None:
        self.actors: dict = {}
        self.next_row = None  # the next mail, which the session may announce behind this one
        self.ahead: tuple | None = None  # ((mail id, server key), envelope sender, bytes): the next mail, made already

    def take(self, batch: _Batch) -> None:
        self.site_name, self.schedule, self.envelope, self.sign = batch.settings
        self.actors.update(batch.actors)

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
    """Outcomes written in groups by the store: one commit per `every` mails or per second, whichever comes first.

    A worker killed mid-group leaves those rows "sending"; the sweeper queues them again, so a crash can
    resend at most one group and loses nothing. A commit per mail made the commits the bottleneck
    (docs/benchmarks.md, B6).
    """

    def __init__(self, every: int, store: _Store) -> None:
        self.every, self.store, self.pending, self.writes, self.sent = max(every, 1), store, [], [], 0
        self.since = time.monotonic()

    def add(self, token: str, row, values: dict) -> None:
        self.pending.append((token, row, values))
        if len(self.pending) >= self.every or time.monotonic() - self.since > 1:
            self.flush()
        while self.writes and self.writes[0].done():
            self.sent += self.writes.pop(0).result()  # a group that could not be written stops the sender here

    def flush(self) -> None:
        if self.pending:
            self.writes.append(self.store.submit(_write_marks, self.pending))
        self.pending, self.since = [], time.monotonic()

    def wait(self, raising: bool = True) -> int:
        """How many were sent, once every group is written (the first failure raised, unless not `raising`)."""
        writes, self.writes = self.writes, []
        for write in writes:
            try:
                self.sent += write.result()
            except Exception:
                if raising:
                    raise
                log.exception("the outcomes of a group of mails could not be written")
        return self.sent


def _write_marks(outcomes: list[tuple[str, object, dict]]) -> int:
    """(In the store's thread.) One group of outcomes and its counts, committed; how many of them were sent."""
    groups: dict[tuple, list[dict]] = {}  # one executemany per set of columns (sent, retry, failed)
    counts = {"sent": 0, "waited": 0, "retried": 0, "failed": 0}
    for token, row, values in outcomes:
        params = {"b_id": row.id, "b_token": token, "claim_token": None, "attempts": row.attempts + 1, **values}
        groups.setdefault(tuple(sorted(values)), []).append(params)
        state = values["state"]
        counts["sent" if state == SENT else "failed" if state == FAILED else
               "waited" if params["attempts"] == row.attempts else "retried"] += 1
        if row.kind == "test" and state != QUEUED:
            _record_test(row, values)
    for params in groups.values():
        db.session.connection().execute(_MARK, params)
    stats.add(**counts)
    db.session.commit()
    return counts["sent"]


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
