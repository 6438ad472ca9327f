"""Refusals that concern the whole session against a real Postfix, and those about one recipient.

A Postfix with `smtpd_client_restrictions = defer` answers every RCPT with 450 4.3.2 and slows each further error
down: the sender must stop at the first answer, pause the server and move its mail as a group.
"""
import time
from datetime import timedelta

import pytest

from tests.outgoing.helpers import add_server
from tests.postfix import Postfix
from webapp.extensions import db
from webapp.outgoing import delivery, limits, queue
from webapp.outgoing.models import FAILED, QUEUED, SENT, OutboundMail, SmtpServerState
from webapp.outgoing.smtp import MAIL, SESSION, refusal_scope
from webapp.settings import SiteSettings
from webapp.timeutil import utcnow

REJECTED = "NOQUEUE: reject: RCPT"


@pytest.fixture(scope="module")
def refusing_postfix():
    server = Postfix(["smtpd_client_restrictions = defer"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relaying_postfix(smtp_sink_servers):
    """Relays to the plain sink; answers 452 4.2.2 for one full mailbox."""
    server = Postfix([f"relayhost = [127.0.0.1]:{smtp_sink_servers.plain.port}",
                      "smtpd_recipient_restrictions = check_recipient_access texthash:{etc}/full, permit_mynetworks, "
                      "reject"], files={"full": "full@example.org 452 4.2.2 Mailbox full\n"})
    yield server
    server.stop()


def queue_some(count: int, recipients=None) -> list[int]:
    recipients = recipients or [f"reader{i}@example.org" for i in range(count)]
    mails = [queue.queue_mail(address, f"Note {i}", "Hello") for i, address in enumerate(recipients)]
    db.session.commit()
    return [m.id for m in mails]


def rows() -> list[OutboundMail]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(OutboundMail).order_by(OutboundMail.id)))


def postfix_server(sinks, postfix: Postfix, name: str = "Postfix"):
    return add_server(sinks, sinks.plain, name=name, port=postfix.port, security="none", username="", password="")


def test_a_client_refusal_ends_the_batch_at_once_and_pauses_the_server(app, client, make_user, login, run_jobs,
                                                                       sinks, refusing_postfix):
    server = postfix_server(sinks, refusing_postfix)
    before = refusing_postfix.log_count(REJECTED)
    queue_some(200)
    started = time.monotonic()
    run_jobs()
    elapsed = time.monotonic() - started
    assert refusing_postfix.log_count(REJECTED, at_least=before + 1) == before + 1  # one RCPT offered, not 200
    assert elapsed < 15
    states = {(r.state, r.attempts) for r in rows()}
    assert states == {(QUEUED, 0)}  # waiting for the server, not failing: no attempt used up
    assert all("450 4.3.2" in r.last_error and r.last_error.startswith("Waiting") for r in rows())
    state = db.session.get(SmtpServerState, server.key)
    assert state.paused_until > utcnow() and "Client host rejected" in state.pause_reason
    assert min(r.next_attempt_at for r in rows()) >= state.paused_until - timedelta(seconds=1)
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "200 waiting for a server" in page and "limit or pause" in page, page[page.find("queue-health"):][:800]
    queue_some(1)  # more mail while it is paused: the server is not asked again
    run_jobs()
    assert refusing_postfix.log_count(REJECTED, at_least=before + 2, timeout=1) == before + 1
    assert rows()[-1].state == QUEUED and rows()[-1].attempts == 0


def test_the_refused_servers_mail_fails_over_as_a_group(app, run_jobs, sinks, refusing_postfix):
    postfix_server(sinks, refusing_postfix)  # the default
    add_server(sinks, sinks.plain, name="Backup sink")
    before = refusing_postfix.log_count(REJECTED)
    queue_some(50)
    run_jobs()
    assert refusing_postfix.log_count(REJECTED, at_least=before + 1) == before + 1
    assert {(r.state, r.sent_via) for r in rows()} == {(SENT, "Backup sink")}
    assert len(sinks.plain.messages) == 50


def test_a_full_mailbox_retries_that_one_mail_and_the_rest_go(app, run_jobs, sinks, relaying_postfix):
    server = postfix_server(sinks, relaying_postfix)
    queue_some(3, ["a@example.org", "full@example.org", "b@example.org"])
    run_jobs()
    by_address = {r.recipient: r for r in rows()}
    assert by_address["a@example.org"].state == SENT and by_address["b@example.org"].state == SENT
    full = by_address["full@example.org"]
    assert full.state == QUEUED and full.attempts == 1 and "452 4.2.2 <full@example.org>: Recipient address rejected: Mailbox full" in full.last_error
    assert not full.last_error.startswith("Waiting")
    state = db.session.get(SmtpServerState, server.key)
    assert state is None or state.paused_until is None  # one mailbox's answer pauses nobody
    deadline = time.monotonic() + 20
    while len(sinks.plain.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(r for m in sinks.plain.messages for r in m.rcpt_tos) == ["a@example.org", "b@example.org"]


def test_a_server_that_goes_on_refusing_gives_up_after_the_retry_schedule(app, sinks, refusing_postfix,
                                                                          monkeypatch):
    SiteSettings.get().mail_retry_minutes = "1, 2"
    postfix_server(sinks, refusing_postfix)
    queue_some(2)
    now = [utcnow()]
    monkeypatch.setattr(limits, "clock", lambda: now[0])
    for _minute in range(3):  # at 0, 1 and 2 minutes every pause has ended, and the server refuses again
        delivery.deliver_due()
        assert {r.state for r in rows()} == {QUEUED}
        now[0] += timedelta(minutes=1, seconds=1)
        db.session.execute(db.update(SmtpServerState).values(paused_until=now[0]))
        db.session.commit()
    delivery.deliver_due()
    assert {r.state for r in rows()} == {FAILED}
    assert all(r.last_error.startswith("Gave up: refused by the server for longer than the retry schedule")
               for r in rows())


def test_flush_tries_a_paused_server_again(app, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.append("421 4.7.0 Try again later, closing connection")
    queue_some(3)
    run_jobs()
    assert [r.state for r in rows()] == [QUEUED] * 3 and len(sinks.plain.messages) == 0
    queue.flush()
    db.session.commit()
    run_jobs()
    assert [r.state for r in rows()] == [SENT] * 3 and len(sinks.plain.messages) == 3


@pytest.mark.parametrize("stage, code, text, first, scope", [
    ("rcpt", 450, "4.3.2 <localhost[127.0.0.1]>: Client host rejected: Try again later", True, SESSION),
    ("rcpt", 421, "4.7.0 Try again later, closing connection. (Gmail)", False, SESSION),
    ("data", 451, "4.7.500 Server busy. Please try again later from [203.0.113.9]. (Microsoft 365)", False, SESSION),
    ("rcpt", 452, "4.5.3 Too many recipients", False, SESSION),
    ("greeting", 421, "Too many concurrent SMTP connections from this IP address; please try again later", True,
     SESSION),
    ("mail", 451, "Temporary local problem - please try later", False, SESSION),
    ("rcpt", 450, "4.2.0 <a@example.org>: Recipient address rejected: Greylisted, see http://postgrey", True,
     SESSION),
    ("rcpt", 450, "4.2.0 <a@example.org>: Recipient address rejected: Greylisted, see http://postgrey", False, MAIL),
    ("rcpt", 452, "4.2.2 The email account that you tried to reach is over quota.", True, MAIL),
    ("rcpt", 450, "4.1.1 <a@example.org>: Recipient address rejected: unverified address", True, MAIL),
    ("data", 452, "Mailbox full", False, MAIL),
    ("rcpt", 550, "5.1.1 <a@example.org>: Recipient address rejected: User unknown", True, MAIL),
    ("rcpt", 554, "5.7.1 Service unavailable; client host blocked", True, MAIL),  # permanent: that mail fails
])
def test_refusal_scope(stage, code, text, first, scope):
    assert refusal_scope(stage, code, text, first) == scope
