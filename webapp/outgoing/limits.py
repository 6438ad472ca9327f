"""What every sender shares about a server: pauses after a refused session, mails a minute, open connections.

Pauses and the minute's count live in the database (the senders may be on several machines and the rows are
the queue); connection slots are Redis locks that expire, so a killed worker's slot comes back by itself.
"""
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update

from webapp.extensions import db
from webapp.outgoing.models import SmtpServerState
from webapp.outgoing.smtp import SmtpProfile
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)
clock = utcnow  # the one clock of sending: tests put a simulated one here
MAX_PAUSE_MINUTES = 60
RESERVE = 10  # slots of a rate limit taken at once: one commit per ten mails, not one per mail
SLOT_SECONDS = 600


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _state(key: str) -> SmtpServerState:
    state = db.session.get(SmtpServerState, key)
    if state is None:
        state = SmtpServerState(key=key, pauses=0, window_count=0)
        db.session.add(state)
        db.session.flush()
    return state


def paused() -> dict[str, SmtpServerState]:
    """The servers paused now or lately (their next pause would be longer), by key: one read per batch."""
    return {s.key: s for s in db.session.scalars(select(SmtpServerState).where(SmtpServerState.pauses > 0))}


def pause(key: str, reason: str) -> datetime:
    """Back a server off after it refused the session: 1, 2, 4 … up to 60 minutes while it goes on refusing."""
    state = _state(key)
    state.pauses = (state.pauses or 0) + 1
    until = clock() + timedelta(minutes=min(2 ** (state.pauses - 1), MAX_PAUSE_MINUTES))
    state.paused_until, state.pause_reason = until, reason[:500]
    db.session.commit()  # at once: the other senders skip it from their next mail on
    log.warning("SMTP server %s paused until %s: %s", key, until.isoformat(), reason)
    return until


def recovered(key: str) -> None:
    """A server that took mail again starts its next pause from one minute."""
    db.session.execute(update(SmtpServerState).where(SmtpServerState.key == key, SmtpServerState.pauses > 0)
                       .values(pauses=0, paused_until=None, pause_reason=None))


class RateLimit:
    """At most `limit` mails a minute through one server, across all senders: slots taken ten at a time."""

    def __init__(self, key: str, limit: int) -> None:
        self.key, self.limit, self.held, self.window = key, limit, 0, None

    def take(self) -> datetime | None:
        """None when this mail may go now, else when the next minute starts."""
        window = minute_of(clock())
        if self.window != window:
            self.give_back()
            self.window = window
        if self.held == 0 and not self._reserve(window):
            return window + timedelta(minutes=1)
        self.held -= 1
        return None

    def _reserve(self, window: datetime) -> bool:
        _state(self.key)
        table = SmtpServerState.__table__
        db.session.execute(table.update().where(table.c.key == self.key, (table.c.window_start.is_(None))
                                                | (table.c.window_start < window))
                           .values(window_start=window, window_count=0))
        for want in (RESERVE, 1):
            want = min(want, self.limit)
            taken = db.session.execute(table.update().where(
                table.c.key == self.key, table.c.window_start == window, table.c.window_count + want <= self.limit)
                .values(window_count=table.c.window_count + want)).rowcount
            if taken:
                db.session.commit()
                self.held = want
                return True
        db.session.commit()
        return False

    def give_back(self) -> None:
        """Slots taken and not used go back, so a batch that ended early does not waste the minute."""
        if self.held and self.window is not None:
            table = SmtpServerState.__table__
            db.session.execute(table.update().where(table.c.key == self.key, table.c.window_start == self.window)
                               .values(window_count=table.c.window_count - self.held))
            db.session.commit()
        self.held = 0


class ConnectionSlot:
    """One of a server's `limit` connections, as an expiring Redis lock; None from take() when all are in use."""

    def __init__(self, profile: SmtpProfile, limit: int) -> None:
        self.profile, self.limit, self.lock = profile, limit, None

    def take(self) -> bool:
        from webapp.jobs import redis_connection

        if self.lock is not None:
            self.lock.reacquire()
            return True
        redis = redis_connection()
        for index in range(self.limit):
            lock = redis.lock(f"spacemail:smtp-connection:{self.profile.key}:{index}", timeout=SLOT_SECONDS,
                              blocking=False)
            if lock.acquire(token=uuid.uuid4().hex):
                self.lock = lock
                return True
        return False

    def release(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            try:
                lock.release()
            except Exception:  # expired already: another worker may hold it now, which is right
                log.info("connection slot of %s had expired", self.profile.key)
