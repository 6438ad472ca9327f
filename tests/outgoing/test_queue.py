"""The mail queue against real sinks and a real worker: faults, retries, the error queue, failover, Redis loss."""
import re
import threading
from datetime import timedelta

import pytest
from redis import Redis

from tests.outgoing.helpers import add_server
from tests.smtpsinks import Tap
from webapp.extensions import db
from webapp.jobs import ready_for_more
from webapp.outgoing import delivery, queue
from webapp.outgoing.models import FAILED, QUEUED, SENDING, SENT, OutboundMail
from webapp.timeutil import utcnow
from workers.send import sweep_queue

BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def queue_some(count: int, body: str = "Hello", subject: str = "Note") -> list[int]:
    mails = [queue.queue_mail(f"reader{i}@example.org", f"{subject} {i}", body) for i in range(count)]
    db.session.commit()
    return [m.id for m in mails]


def rows() -> list[OutboundMail]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(OutboundMail).order_by(OutboundMail.id)))


def flush_and_run(run_jobs) -> None:
    queue.flush()
    db.session.commit()
    run_jobs()


@pytest.mark.parametrize("body", ["one\n.\ntwo", "one\r.\r\ntwo", "one\n.\r\ntwo",
                                  "x\n.\r\nMAIL FROM:<a@evil.example>\r\nRCPT TO:<b@evil.example>\r\nDATA\r\nsmuggled\r\n"])
def test_no_smtp_smuggling(app, run_jobs, sinks, body):
    tap = Tap(sinks.plain.port)
    try:
        add_server(sinks, sinks.plain, port=tap.port)
        queue_some(1, body=body)
        run_jobs()
    finally:
        tap.close()
    wire = bytes(tap.client_bytes)
    assert BARE_EOL.search(wire) is None
    assert wire.count(b"\r\n.\r\n") == 1  # one end of data, so one message
    assert len(sinks.plain.messages) == 1 and sinks.plain.messages[0].rcpt_tos == ["reader0@example.org"]
    text = sinks.plain.messages[0].message.get_content()
    assert text.replace("\n", "") == body.replace("\r", "").replace("\n", "")


def test_a_deferral_is_retried_and_delivered_once(app, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.append("452 4.2.2 Mailbox full")  # about this one mail, not the session
    queue_some(1)
    run_jobs()
    (row,) = rows()
    assert row.state == QUEUED and row.attempts == 1 and "452 4.2.2" in row.last_error
    assert timedelta(seconds=50) < row.next_attempt_at - utcnow() <= timedelta(minutes=1)
    flush_and_run(run_jobs)
    (row,) = rows()
    assert row.state == SENT and row.attempts == 2
    assert len(sinks.plain.messages) == 1


def test_a_permanent_refusal_goes_to_the_error_queue_at_once(app, client, make_user, login, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.append("550 5.1.1 No such user")
    (mail_id,) = queue_some(1)
    run_jobs()
    (row,) = rows()
    assert row.state == FAILED and row.attempts == 1 and "550 5.1.1 No such user" in row.last_error
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "1 mail in the error queue" in page and "No such user" in page
    response = client.htmx_post("/admin/mail-queue/errors", data={"ids": [str(mail_id)], "action": "resend"})
    assert "1 mail queued again." in response.get_data(as_text=True)
    run_jobs()
    (row,) = rows()
    assert row.state == SENT and len(sinks.plain.messages) == 1


def test_a_dropped_connection_after_data_is_retried_and_counted(app, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.append("drop")
    queue_some(1)
    run_jobs()
    (row,) = rows()
    assert row.state == QUEUED and row.attempts == 1 and "closed the connection" in row.last_error
    flush_and_run(run_jobs)
    (row,) = rows()
    assert row.state == SENT and row.attempts == 2
    assert len(sinks.plain.messages) == 1 and sinks.plain.recorder.data_commands == 2


def test_a_stalled_server_times_out_and_leaves_nothing_sending(app, run_jobs, sinks):
    add_server(sinks, sinks.plain, timeout_seconds=1)
    sinks.plain.recorder.stall_seconds = 3
    sinks.plain.recorder.plan.extend(["stall", "stall"])
    queue_some(2)
    run_jobs()
    assert [(r.state, r.attempts) for r in rows()] == [(QUEUED, 1), (QUEUED, 1)]
    assert all("did not answer within 1 second." in r.last_error for r in rows())
    assert sinks.plain.messages == []


def test_running_out_of_attempts_goes_to_the_error_queue(app, run_jobs, sinks):
    from webapp.settings import SiteSettings

    SiteSettings.get().mail_retry_minutes = "1"
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.extend(["452 4.2.2 Mailbox full", "452 4.2.2 Mailbox full"])
    queue_some(1)
    run_jobs()
    flush_and_run(run_jobs)
    (row,) = rows()
    assert row.state == FAILED and row.attempts == 2 and row.last_error.startswith("Gave up after 2 attempts")


def test_redis_flushall_with_500_queued_loses_nothing_and_sends_nothing_twice(app, run_jobs, sinks, redis_server):
    add_server(sinks, sinks.plain)
    ids = queue_some(500)
    Redis.from_url(redis_server).flushall()
    assert run_jobs() == 0  # the wake-up is gone with Redis
    sweep_queue()
    run_jobs()
    assert all(r.state == SENT for r in rows()) and len(rows()) == len(ids)
    received = [m.message["Message-ID"] for m in sinks.plain.messages]
    assert len(received) == 500 and len(set(received)) == 500


def test_five_flushes_at_once_send_nothing_twice(app, client, make_user, login, sinks):
    add_server(sinks, sinks.plain)
    queue_some(120)
    admin = make_user("root", admin=True)
    login(admin)
    barrier = threading.Barrier(5)
    errors = []

    def click_flush_then_send():
        try:
            barrier.wait()
            assert client.htmx_post("/admin/mail-queue/flush").status_code == 200
            with app.app_context():
                delivery.deliver_due()
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=click_flush_then_send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(r.state == SENT for r in rows())
    received = [m.rcpt_tos[0] for m in sinks.plain.messages]
    assert len(received) == 120 and len(set(received)) == 120


def test_failover_to_the_next_server_is_recorded(app, client, make_user, login, run_jobs, sinks):
    sinks.plain.stop()
    first = add_server(sinks, sinks.plain, name="Primary")
    add_server(sinks, sinks.starttls, name="Backup")
    queue_some(3)
    run_jobs()
    assert [(r.state, r.sent_via) for r in rows()] == [(SENT, "Backup")] * 3
    assert all(r.last_error.startswith("Primary: Nothing accepts connections") for r in rows())
    assert len(sinks.starttls.messages) == 3
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "Backup" in page and "Tried first: Primary" in page
    assert first.is_default is False


def test_sweeper_requeues_mail_stuck_in_sending(app, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    queue_some(1)
    _token, claimed = delivery.claim(10)  # a worker claimed it, then died
    assert claimed and rows()[0].state == SENDING
    db.session.execute(db.update(OutboundMail).values(claimed_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    sweep_queue()
    run_jobs()
    (row,) = rows()
    assert row.state == SENT and len(sinks.plain.messages) == 1


def test_without_a_server_mail_waits_and_the_page_says_why(app, client, make_user, login, run_jobs):
    queue_some(2)
    run_jobs()
    assert [r.state for r in rows()] == [QUEUED, QUEUED]
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "No SMTP server is configured" in page and "2 mail queued" in page


def test_health_warns_when_mail_waits_over_30_minutes(app, client, make_user, login):
    queue_some(1)
    db.session.execute(db.update(OutboundMail).values(created_at=utcnow() - timedelta(minutes=45)))
    db.session.commit()
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "the oldest has waited 45 minutes" in page and "Mail has waited over 30 minutes" in page


def test_several_mails_share_one_connection(app, run_jobs, sinks):
    tap = Tap(sinks.plain.port)
    try:
        add_server(sinks, sinks.plain, port=tap.port)
        queue_some(25)
        run_jobs()
    finally:
        tap.close()
    assert len(sinks.plain.messages) == 25
    assert tap.connections == 1 and bytes(tap.client_bytes).upper().count(b"EHLO") == 1


def test_a_refused_recipient_goes_to_the_error_queue_and_the_rest_still_go(app, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.rcpt_plan.append("550 5.1.1 <reader0@example.org>: Recipient address rejected")
    queue_some(3)
    run_jobs()
    states = [(r.recipient, r.state) for r in rows()]
    assert states == [("reader0@example.org", FAILED), ("reader1@example.org", SENT), ("reader2@example.org", SENT)]
    assert "refused the recipient reader0@example.org: 550 5.1.1" in rows()[0].last_error
    assert [m.rcpt_tos for m in sinks.plain.messages] == [["reader1@example.org"], ["reader2@example.org"]]


def test_error_queue_actions_without_a_selection_change_nothing(app, client, make_user, login, run_jobs, sinks):
    add_server(sinks, sinks.plain)
    sinks.plain.recorder.plan.append("550 5.1.1 No such user")
    queue_some(1)
    run_jobs()
    login(make_user("root", admin=True))
    response = client.htmx_post("/admin/mail-queue/errors", data={"action": "delete"})
    assert "Tick the mail to resend or delete first." in response.get_data(as_text=True)
    assert [r.state for r in rows()] == [FAILED]
    response = client.htmx_post("/admin/mail-queue/errors", data={"action": "explode", "ids": [str(rows()[0].id)]})
    assert [r.state for r in rows()] == [FAILED]


def test_a_full_batch_wakes_another_sender_and_nothing_goes_twice(app, run_jobs, sinks, redis_server):
    """Two workers share a long queue: a sender that claims a full batch queues a job for an idle worker."""
    from rq import Queue

    add_server(sinks, sinks.plain)
    app.config["MAIL_SEND_BATCH"] = 2
    queue_some(5)
    jobs = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(redis_server))
    jobs.empty()  # the wake-up queue_mail left: this test sends as the job would, by hand
    ready_for_more(queue.WAKE)
    assert delivery.deliver_due() == 5
    assert [job.func_name for job in jobs.jobs] == ["workers.send.deliver_due"]
    run_jobs()
    assert sorted(r for m in sinks.plain.messages for r in m.rcpt_tos) == [f"reader{i}@example.org" for i in range(5)]
    assert {r.state for r in rows()} == {SENT}


def test_a_claim_takes_no_more_than_its_batch(app):
    """Each sender holds only its batch: on PostgreSQL a locking subquery once let one claim take the whole queue."""
    queue_some(5)
    token, claimed = delivery.claim(2)
    assert len(claimed) == 2
    assert [r.state for r in rows()] == [SENDING, SENDING, QUEUED, QUEUED, QUEUED]
    assert {r.claim_token for r in rows() if r.state == SENDING} == {token}
