"""Per-server limits with a simulated clock: mail over a limit waits for it, is never failed for it, goes once."""
from datetime import timedelta

import pytest

from tests.outgoing.helpers import add_server
from webapp.extensions import db
from webapp.outgoing import delivery, limits, queue
from webapp.outgoing.models import QUEUED, SENT, OutboundMail
from webapp.outgoing.servers import ordered_profiles
from webapp.timeutil import utcnow


@pytest.fixture
def clock(monkeypatch):
    """The sending clock, at the start of a minute, moved on by hand."""
    now = [utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)]
    monkeypatch.setattr(limits, "clock", lambda: now[0])
    return now


def rows() -> list[OutboundMail]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(OutboundMail).order_by(OutboundMail.id)))


def test_500_mails_through_100_a_minute_take_5_minutes_all_delivered_once(app, client, make_user, login, sinks,
                                                                         clock):
    add_server(sinks, sinks.plain, name="Relay", max_per_minute=100)
    start = clock[0]
    queue.queue_many([{"recipient": f"reader{i}@example.org", "subject": f"Note {i}", "body_text": "Hello",
                       "body_html": None, "headers": {}} for i in range(500)])
    db.session.commit()
    sent_per_minute = []
    while len(sinks.plain.messages) < 500 and len(sent_per_minute) < 10:
        before = len(sinks.plain.messages)
        delivery.deliver_due()
        sent_per_minute.append(len(sinks.plain.messages) - before)
        if len(sent_per_minute) == 1:
            waiting = [r for r in rows() if r.state == QUEUED]
            assert len(waiting) == 400 and {r.attempts for r in waiting} == {0}
            assert {r.last_error for r in waiting} == {"Waiting: the limit of 100 mails a minute on Relay"}
            assert {r.next_attempt_at for r in waiting if r.last_error} == {start + timedelta(minutes=1)}
            login(make_user("root", admin=True))
            page = client.get("/admin/mail-queue").get_data(as_text=True)
            assert "400 waiting for a server" in page and "limit of 100 mails a minute" in page
        clock[0] += timedelta(minutes=1)
    assert sent_per_minute == [100, 100, 100, 100, 100]  # five minutes of simulated time
    assert clock[0] - start == timedelta(minutes=5)
    ids = [m.message["Message-ID"] for m in sinks.plain.messages]
    assert len(ids) == 500 and len(set(ids)) == 500
    assert {r.state for r in rows()} == {SENT}


def test_two_senders_share_one_limit(app, sinks, clock):
    """Slots are taken from the database, so two senders together stay within the minute's limit."""
    add_server(sinks, sinks.plain, max_per_minute=15)
    profile = ordered_profiles()[0]
    first, second = limits.RateLimit(profile.key, 15), limits.RateLimit(profile.key, 15)
    granted = sum(limit.take() is None for _ in range(20) for limit in (first, second))
    assert granted == 15
    first.give_back()
    second.give_back()
    clock[0] += timedelta(minutes=1)
    assert first.take() is None  # a new minute, a new count


def test_mail_waits_while_every_connection_is_in_use(app, sinks, clock):
    add_server(sinks, sinks.plain, name="Relay", max_connections=1)
    profile = ordered_profiles()[0]
    other_sender = limits.ConnectionSlot(profile, 1)
    assert other_sender.take()
    try:
        queue.queue_mail("reader@example.org", "Note", "Hello")
        db.session.commit()
        delivery.deliver_due()
        (row,) = rows()
        assert row.state == QUEUED and row.attempts == 0 and "Relay allows 1 connection, all in use by other senders" in \
            row.last_error
        assert row.next_attempt_at == clock[0] + timedelta(seconds=30)
    finally:
        other_sender.release()
    clock[0] += timedelta(seconds=31)
    delivery.deliver_due()
    assert [r.state for r in rows()] == [SENT] and len(sinks.plain.messages) == 1
    assert limits.ConnectionSlot(profile, 1).take()  # the sender gave its slot back when it was done
