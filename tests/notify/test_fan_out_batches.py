"""A fan-out commits its watchers batch by batch with the event's progress: the senders start on the first batch, a
fan-out stopped half way goes on from where it was, and a second worker on the same event adds nothing.

The stop is injected (queueing a batch raises, as a worker killed there would leave it); the rest is real: web
requests, the RQ worker, the SMTP sink.
"""
from collections import Counter

from sqlalchemy import select, update

from tests.notify.test_notifications import client_for, team  # noqa: F401  (team is a fixture)
from tests.notify.test_poison import make_due
from webapp.extensions import db
from webapp.notify import fanout
from webapp.notify.models import SPACE, ContentEvent, Watch
from webapp.outgoing.models import OutboundMail
from webapp.spaces.models import VIEW, SpaceRole

WATCHERS = 12


def watchers(space, make_user) -> list[str]:
    """WATCHERS more people who view TEAM and watch all of it; their addresses."""
    addresses = []
    for i in range(WATCHERS):
        person = make_user(f"watcher{i:02d}")
        db.session.add(SpaceRole(space=space, user=person, role=VIEW))
        db.session.add(Watch(user_id=person.id, scope=SPACE, space_id=space.id))
        addresses.append(person.email)
    db.session.commit()
    return addresses


def test_a_fan_out_stopped_after_its_first_batch_goes_on_and_tells_everyone_once(app, team, run_jobs, sinks,  # noqa: F811
                                                                                make_user, monkeypatch):
    space, people = team
    addresses = watchers(space, make_user)
    monkeypatch.setattr(fanout, "BATCH", 5)
    real_queue_many, calls = fanout.queue_many, []

    def dies_on_the_second_batch(mails, **kwargs):
        calls.append(len(mails))
        if len(calls) == 2:
            raise RuntimeError("the worker stopped here")
        return real_queue_many(mails, **kwargs)

    monkeypatch.setattr(fanout, "queue_many", dies_on_the_second_batch)
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Runbook", "body": "Step one."})
    run_jobs()
    event = db.session.scalar(select(ContentEvent))
    first = sorted(r for m in sinks.plain.messages for r in m.rcpt_tos)
    assert first == sorted(addresses)[:5]  # the first batch was committed and went out before the stop
    assert event.fanned_out_at is None and event.attempts == 1 and "stopped here" in event.last_error

    monkeypatch.setattr(fanout, "queue_many", real_queue_many)
    make_due(ContentEvent, id=event.id)
    from workers.notify import notify_tick

    notify_tick()
    run_jobs()
    told = Counter(r for m in sinks.plain.messages for r in m.rcpt_tos)
    assert sorted(told) == sorted(addresses) and set(told.values()) == {1}  # everyone, once
    event = db.session.get(ContentEvent, event.id)
    assert event.fanned_out_at is not None and event.recipients == WATCHERS


def test_a_second_worker_on_the_same_event_adds_nothing(app, team, make_user, monkeypatch):  # noqa: F811
    space, people = team
    watchers(space, make_user)
    monkeypatch.setattr(fanout, "BATCH", 5)
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Runbook", "body": "Step one."})
    event = db.session.scalar(select(ContentEvent))
    assert event.fanned_out_to is None
    with db.engine.begin() as other:  # another worker has queued a first batch meanwhile
        other.execute(update(ContentEvent).where(ContentEvent.id == event.id).values(fanned_out_to=people["ann"].id))
    assert fanout.fan_out(event) == (False, 0)  # this one read the old progress: its batch is rolled back
    assert db.session.scalar(select(db.func.count(OutboundMail.id))) == 0
    db.session.expire_all()
    assert fanout.fan_out(db.session.get(ContentEvent, event.id))[0] is True  # read afresh, it goes on
