"""Against a server that offers PIPELINING, each mail's envelope goes out behind the message before it (one round
trip a mail), and nothing is lost, doubled or sent empty when a message is refused or the next cannot be made."""
import pytest

from tests.outgoing.helpers import add_server
from tests.outgoing.test_queue import queue_some, rows
from tests.smtpsinks import Recorder, Sink, Tap
from webapp.extensions import db
from webapp.outgoing import queue
from webapp.outgoing.models import ACCOUNT, FAILED, SENT, OutboundMail


@pytest.fixture(scope="module")
def pipelining_sink(smtp_sink_servers):
    sink = Sink(smtp_sink_servers.ca, recorder=Recorder(pipelining=True))
    yield sink
    sink.stop()


@pytest.fixture
def tapped(app, sinks, pipelining_sink):
    """The pipelining sink, emptied, behind a Tap that keeps what the sender wrote; its server is the default."""
    pipelining_sink.recorder.reset()
    tap = Tap(pipelining_sink.port)
    add_server(sinks, pipelining_sink, port=tap.port)
    yield pipelining_sink, tap
    tap.close()


def delivered(sink) -> list[tuple[list[str], str]]:
    """(envelope recipients, the To header) of each message the server holds."""
    return [(m.rcpt_tos, str(m.message["To"])) for m in sink.messages]


def test_each_envelope_rides_behind_the_message_before_it(tapped, run_jobs):
    sink, tap = tapped
    queue_some(30)
    run_jobs()
    wire = bytes(tap.client_bytes)
    assert delivered(sink) == [([f"reader{i}@example.org"], f"reader{i}@example.org") for i in range(30)]
    assert all(r.state == SENT for r in rows())
    assert tap.connections == 1
    assert wire.count(b"\r\n.\r\nMAIL FROM:") == 29  # every mail but the first was announced behind the last
    assert wire.count(b"MAIL FROM:") == 30  # and none twice


def test_a_refused_message_ends_the_session_and_the_announced_mail_goes_once(tapped, run_jobs):
    sink, tap = tapped
    sink.recorder.plan += ["", "", "554 5.6.0 Message content rejected"]  # the third message
    queue_some(8)
    run_jobs()
    states = [(r.recipient, r.state) for r in rows()]
    assert states == [(f"reader{i}@example.org", FAILED if i == 2 else SENT) for i in range(8)]
    assert "554 5.6.0 Message content rejected" in rows()[2].last_error
    assert delivered(sink) == [([f"reader{i}@example.org"], f"reader{i}@example.org") for i in range(8) if i != 2]
    assert all(m.data.strip() for m in sink.messages)  # the abandoned DATA delivered no empty message
    assert tap.connections == 2  # the fourth mail, announced on the first session, went on a new one


def test_a_mail_that_cannot_be_made_after_its_envelope_went_is_not_sent(tapped, run_jobs):
    sink, tap = tapped
    mails = [queue.queue_mail(f"reader{i}@example.org", f"Reset {i}", "Your link", kind=ACCOUNT) for i in range(5)]
    db.session.commit()
    db.session.get(OutboundMail, mails[2].id).body_text = "not a token these keys made"
    db.session.commit()
    run_jobs()
    states = [(r.recipient, r.state) for r in rows()]
    assert states == [(f"reader{i}@example.org", FAILED if i == 2 else SENT) for i in range(5)]
    assert "could not be built" in rows()[2].last_error
    assert delivered(sink) == [([f"reader{i}@example.org"], f"reader{i}@example.org") for i in (0, 1, 3, 4)]
    assert all("Your link" in m.message.get_content() for m in sink.messages)
    assert tap.connections == 2  # its envelope, announced behind the second mail, was abandoned with the session


def test_a_refused_announced_recipient_retries_that_mail_and_the_rest_go(tapped, run_jobs):
    sink, tap = tapped
    sink.recorder.refusals["reader3@example.org"] = "452 4.2.2 Mailbox full"
    queue_some(6)
    run_jobs()
    states = {r.recipient: (r.state, r.attempts) for r in rows()}
    assert states.pop("reader3@example.org")[0] == "queued"
    assert set(states.values()) == {(SENT, 1)}
    assert delivered(sink) == [([f"reader{i}@example.org"], f"reader{i}@example.org") for i in (0, 1, 2, 4, 5)]
    assert tap.connections == 1  # a refused recipient is about one mail: the session goes on


def test_many_batches_go_on_one_session_each_once_and_are_counted(tapped, app):
    """Batches claimed while the last ones go, outcomes written in groups by the sender's database thread: the
    last mail of each batch announces the first of the next, and the count returned is every mail sent."""
    from webapp.jobs import ready_for_more
    from webapp.outgoing import delivery

    sink, tap = tapped
    app.config.update(MAIL_SEND_BATCH=7, MAIL_MARK_EVERY=3)
    queue_some(61)
    ready_for_more(queue.WAKE)
    assert delivery.deliver_due() == 61
    wire = bytes(tap.client_bytes)
    assert delivered(sink) == [([f"reader{i}@example.org"], f"reader{i}@example.org") for i in range(61)]
    assert [(r.state, r.attempts, r.claim_token) for r in rows()] == [(SENT, 1, None)] * 61
    assert tap.connections == 1 and wire.count(b"MAIL FROM:") == 61
    assert wire.count(b"\r\n.\r\nMAIL FROM:") >= 55  # across the batches too, unless a claim was still being read
