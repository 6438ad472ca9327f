"""Poison items: one event or one mail that always fails must not delay the others, and ends up visible.

The faults are injected (a fan-out or a mail build that raises): nothing real raises there today, which is the point of
guarding it. Everything else is real: web requests, the RQ worker, the SMTP sink, the admin pages.
"""
from datetime import timedelta

from sqlalchemy import select, update

from tests.notify.test_notifications import client_for, recipients, team  # noqa: F401  (team is a fixture)
from webapp.content.models import Page
from webapp.extensions import db
from webapp.notify import fanout
from webapp.notify.models import ContentEvent
from webapp.outgoing import compose
from webapp.outgoing.models import FAILED, QUEUED, SENDING, SENT, OutboundMail
from webapp.timeutil import utcnow


def make_due(model, **where) -> None:
    column = model.send_after if model is ContentEvent else model.next_attempt_at
    db.session.execute(update(model).where(*[getattr(model, k) == v for k, v in where.items()])
                       .values({column: utcnow() - timedelta(seconds=1)}))
    db.session.commit()


def test_an_event_that_always_raises_is_set_aside_and_blocks_nothing(app, team, run_jobs, sinks, monkeypatch,  # noqa: F811
                                                                     make_user, login, client):
    space, people = team
    bob = client_for(app, people["bob"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    ann = client_for(app, people["ann"])
    real_parts = fanout._parts

    def parts(event, page, *args):
        if page.title == "Poison":
            raise KeyError("a template variable nobody set")
        return real_parts(event, page, *args)

    monkeypatch.setattr(fanout, "_parts", parts)
    for title in ("Poison", "Second", "Third"):  # the poison is the oldest: it used to be picked first for ever
        ann.post("/spaces/TEAM/pages/new", data={"title": title, "body": "text"})
    run_jobs()
    subjects = sorted(m.message["Subject"].split("] ")[-1] for m in sinks.plain.messages)
    assert subjects == ["Team › Second", "Team › Third"]
    poison = db.session.scalar(select(ContentEvent).join(Page, Page.id == ContentEvent.page_id)
                               .where(Page.title == "Poison"))
    assert poison.attempts == 1 and poison.fanned_out_at is None and poison.failed_at is None
    assert poison.send_after > utcnow() and "KeyError" in poison.last_error

    from workers.notify import notify_tick

    for attempt in (2, 3):
        make_due(ContentEvent, id=poison.id)
        notify_tick()  # the minute tick finds it due again and wakes the fan-out
        run_jobs()
        db.session.expire_all()
        assert db.session.get(ContentEvent, poison.id).attempts == attempt
    poison = db.session.get(ContentEvent, poison.id)
    assert poison.failed_at is not None  # quarantined after three tries

    root = make_user("root", admin=True)
    login(root)
    page = client.get("/admin/system").get_data(as_text=True)
    assert "Failed events" in page and "KeyError" in page and f'id="event-{poison.id}"' in page

    monkeypatch.setattr(fanout, "_parts", real_parts)  # the cause is fixed
    answer = client.htmx_post(f"/admin/system/failed-events/{poison.id}/retry")
    assert answer.status_code == 200 and answer.get_data(as_text=True).strip() == ""
    run_jobs()
    assert any(m.message["Subject"].endswith("Team › Poison") for m in sinks.plain.messages)
    assert "KeyError" not in client.get("/admin/system").get_data(as_text=True)


def test_discarding_a_failed_event_tells_nobody(app, team, run_jobs, sinks, monkeypatch, make_user, login,  # noqa: F811
                                                client):
    space, people = team
    client_for(app, people["bob"]).htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    monkeypatch.setattr(fanout, "POISON_ATTEMPTS", 1)
    monkeypatch.setattr(fanout, "_parts", lambda *a: 1 / 0)
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Poison", "body": "x"})
    run_jobs()
    event = db.session.scalar(select(ContentEvent))
    assert event.failed_at is not None and "ZeroDivisionError" in event.last_error
    login(make_user("root", admin=True))
    assert client.post(f"/admin/system/failed-events/{event.id}/discard").status_code == 302
    db.session.expire_all()
    assert db.session.get(ContentEvent, event.id).fanned_out_at is not None
    run_jobs()
    assert sinks.plain.messages == []
    assert 'id="event-' not in client.get("/admin/system").get_data(as_text=True)


def test_a_mail_that_always_raises_goes_to_the_error_queue_and_the_others_go_out(app, team, run_jobs, sinks,  # noqa: F811
                                                                                monkeypatch, make_user, login,
                                                                                client):
    from webapp.outgoing.queue import queue_mail

    real_build = compose.build

    def build(row, *args):
        if row.recipient == "poison@example.org":
            raise RuntimeError("a bug in composing")
        return real_build(row, *args)

    monkeypatch.setattr(compose, "build", build)
    for to in ("first@example.org", "poison@example.org", "third@example.org"):
        queue_mail(to, f"Hello {to}", "text", None)
    db.session.commit()
    run_jobs()
    assert recipients(sinks) == ["first@example.org", "third@example.org"]
    poison = db.session.scalar(select(OutboundMail).where(OutboundMail.recipient == "poison@example.org"))
    assert poison.state == QUEUED and poison.attempts == 1 and "RuntimeError" in poison.last_error  # not "sending"
    from workers.send import sweep_queue

    for _ in range(2):
        make_due(OutboundMail, id=poison.id)
        sweep_queue()  # the minute sweep finds it due and wakes a sender
        run_jobs()
    db.session.expire_all()
    poison = db.session.get(OutboundMail, poison.id)
    assert poison.state == FAILED and poison.attempts == 3 and "Gave up after 3 attempts" in poison.last_error
    login(make_user("root", admin=True))
    queue_page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "poison@example.org" in queue_page and "RuntimeError" in queue_page


def test_reclaiming_a_mail_stuck_in_sending_counts_an_attempt_and_gives_up(app, team, sinks):  # noqa: F811
    from webapp.outgoing.queue import queue_mail, reclaim_stuck
    from webapp.settings import retry_schedule

    mail = queue_mail("stuck@example.org", "Stuck", "text", None)
    db.session.commit()
    for expected in range(1, len(retry_schedule()) + 2):
        db.session.execute(update(OutboundMail).where(OutboundMail.id == mail.id).values(
            state=SENDING, claim_token="dead-worker", claimed_at=utcnow() - timedelta(hours=1)))
        assert reclaim_stuck() == 1
        db.session.commit()
        db.session.expire_all()
        row = db.session.get(OutboundMail, mail.id)
        assert row.attempts == expected
        if row.state == FAILED:
            break
        assert row.state == QUEUED
    assert row.state == FAILED and "gave up" in row.last_error and row.attempts == len(retry_schedule()) + 1
    assert SENT not in {r.state for r in db.session.scalars(select(OutboundMail))}
