"""Bounces: VERP envelope senders, real DSNs from Postfix read back through Dovecot, Mailman's real-world samples
(flufl.bounce's own test data, fetched at test time), scoring, suppression, the banner and Try again."""
import ast
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.archive.helpers import read_from_dovecot
from tests.outgoing.helpers import add_server
from tests.postfix import Postfix
from webapp.extensions import db
from webapp.outgoing import bounces, delivery, queue
from webapp.outgoing.models import HARD, QUEUED, SENT, SOFT, SUPPRESSED, Bounce, BounceMailbox, MailDay, OutboundMail, Suppression
from workers.send import fetch_bounces

SAMPLES = Path.home() / ".cache" / "spacemail-tests" / "flufl_bounce-6.0.0"
DEAD = "gone@example.org"


@pytest.fixture(scope="module")
def bouncing_postfix(smtp_sink_servers):
    """Relays to the plain sink, which refuses DEAD: Postfix then writes a real DSN to the envelope sender."""
    server = Postfix([f"relayhost = [127.0.0.1]:{smtp_sink_servers.plain.port}"])
    yield server
    server.stop()


@pytest.fixture
def bounce_box(app, dovecot):
    return read_from_dovecot(bounces.mailbox(), dovecot, "bounces@bounces.example.org")


def sent_mail(sinks, recipient: str) -> OutboundMail:
    """A mail queued and sent through the plain sink; its envelope sender is what the sink saw."""
    mail = queue.queue_mail(recipient, "Note", "Hello")
    db.session.commit()
    delivery.deliver_due()
    db.session.expire_all()
    return db.session.get(OutboundMail, mail.id)


def envelope_of(sinks, mail: OutboundMail) -> str:
    (received,) = [m for m in sinks.plain.messages if m.message["Message-ID"] == mail.message_id]
    return received.mail_from


def as_delivered(raw: bytes, to: str) -> bytes:
    """A message as the bounce mailbox's server stores it: its envelope recipient on top."""
    return f"Delivered-To: {to}\r\n".encode() + raw


def test_every_mail_goes_out_with_its_own_signed_envelope_sender(app, sinks, bounce_box):
    add_server(sinks, sinks.plain)
    first, second = sent_mail(sinks, "a@example.org"), sent_mail(sinks, "b@example.org")
    envelopes = [envelope_of(sinks, first), envelope_of(sinks, second)]
    assert envelopes[0].startswith(f"bounces+{first.id}-") and envelopes[0].endswith("@bounces.example.org")
    assert envelopes[1].startswith(f"bounces+{second.id}-") and envelopes[0] != envelopes[1]
    assert sinks.plain.messages[0].message["From"].endswith("<spacemail@example.org>")  # From stays the server's


def test_a_real_postfix_dsn_is_fetched_matched_and_past_the_threshold_suppresses(app, client, make_user, login,
                                                                                 sinks, bouncing_postfix, dovecot,
                                                                                 bounce_box):
    add_server(sinks, sinks.plain, name="Postfix", port=bouncing_postfix.port, security="none", username="",
               password="")
    sinks.plain.recorder.refusals[DEAD] = f"550 5.1.1 <{DEAD}>: Recipient address rejected: User unknown"
    person = make_user("gone", full_name="Gone Person")
    person.email = DEAD
    db.session.commit()
    mails = [sent_mail(sinks, DEAD) for _ in range(2)]
    assert {m.state for m in mails} == {SENT}  # the relay took them; the refusal comes later, as a bounce
    deadline = time.monotonic() + 30
    while len([m for m in sinks.plain.messages if m.mail_from in ("", "<>")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    dsns = [m for m in sinks.plain.messages if m.mail_from in ("", "<>")]
    assert len(dsns) == 2, bouncing_postfix.log_text()[-3000:]
    assert dsns[0].message.get_content_type() == "multipart/report"
    for dsn in dsns:
        dovecot.deliver(bounce_box, [as_delivered(dsn.data, dsn.rcpt_tos[0])])
    queue.queue_mail(DEAD, "Waiting", "Held?")  # queued before the bounces are read: held once they are
    db.session.commit()
    assert fetch_bounces() == 2
    found = list(db.session.scalars(db.select(Bounce).order_by(Bounce.mail_id)))
    assert [(b.outcome, b.mail_id, b.address, b.status) for b in found] == [
        (HARD, mails[0].id, DEAD, "5.1.1"), (HARD, mails[1].id, DEAD, "5.1.1")]
    assert "User unknown" in found[0].diagnostic
    assert dovecot.mailbox_files(bounce_box) == []  # recorded, committed, then removed
    suppression = db.session.get(Suppression, DEAD)
    assert suppression.score == 4 and "5.1.1" in suppression.reason
    held = db.session.scalars(db.select(OutboundMail).where(OutboundMail.subject == "Waiting")).one()
    assert held.state == SUPPRESSED and "bounced" in held.last_error
    later = queue.queue_mail(DEAD, "Later", "x")
    db.session.commit()
    assert later.state == SUPPRESSED
    day = db.session.scalars(db.select(MailDay)).one()
    assert day.bounced == 2 and day.suppressed == 2

    login(make_user("root", admin=True))
    page = client.get("/admin/mail-servers/bounces").get_data(as_text=True)
    assert DEAD in page and "User unknown" in page and "Remove" in page
    chart = client.get("/admin/mail-queue").get_data(as_text=True)
    assert "<svg" in chart and "2 bounced" in chart and "<script" not in chart.split("<svg")[1].split("</svg>")[0]

    client = app.test_client()
    login(person, client)
    home = client.get("/profile").get_data(as_text=True)
    assert "Mail to you bounced: 5.1.1" in home and "Try again" in home, home[home.find("mail-bounced") - 60:][:600]
    client.post("/profile/mail-bounced/try-again", data={"next": "/profile"})
    assert db.session.get(Suppression, DEAD) is None
    db.session.expire_all()
    assert db.session.get(OutboundMail, held.id).state == QUEUED
    assert "Mail to you bounced" not in client.get("/profile").get_data(as_text=True)
    assert bounces.score(DEAD) == 0  # the old bounces no longer count


def bounce_to(mail: OutboundMail, body: bytes, sinks) -> bytes:
    return as_delivered(body, envelope_of(sinks, mail))


DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Delivery Status Notification (Delay)\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\n"
       b"Content-Type: text/plain\r\n\r\nStill trying.\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
       b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n"
       b"Diagnostic-Code: smtp; %s\r\n\r\n--B--\r\n")


def test_soft_bounces_suppress_only_when_they_repeat_and_auto_replies_do_nothing(app, sinks, bounce_box):
    add_server(sinks, sinks.plain)
    address = "full@example.org"
    for i in range(4):
        mail = sent_mail(sinks, address)
        raw = DSN % (address.encode(), b"delayed", b"4.2.2", b"452 4.2.2 Mailbox full")
        outcome = bounces.handle(bounce_to(mail, raw, sinks)).outcome
        db.session.commit()
        assert outcome == SOFT
        assert (db.session.get(Suppression, address) is not None) == (i == 3)  # the fourth soft bounce: score 4
    other = sent_mail(sinks, "away@example.org")
    reply = (b"From: away@example.org\r\nSubject: Automatic reply: Note\r\nAuto-Submitted: auto-replied\r\n"
             b"X-Autoreply: yes\r\n\r\nI am out of the office until Monday. Your message was not delivered to my "
             b"attention until then.\r\n")
    for _ in range(5):
        bounces.handle(bounce_to(other, reply + b"x" * _, sinks))
    db.session.commit()
    assert {b.outcome for b in db.session.scalars(db.select(Bounce).where(Bounce.mail_id == other.id))} == \
        {"auto_reply"}
    assert bounces.score("away@example.org") == 0 and db.session.get(Suppression, "away@example.org") is None


def test_a_forged_bounce_suppresses_nobody_and_an_unmatched_one_is_kept(app, client, make_user, login, sinks,
                                                                        bounce_box):
    add_server(sinks, sinks.plain)
    mail = sent_mail(sinks, "victim@example.org")
    hard = DSN % (b"victim@example.org", b"failed", b"5.1.1", b"550 5.1.1 User unknown")
    forged = as_delivered(hard, f"bounces+{mail.id}-000000000000@bounces.example.org")
    for i in range(3):
        assert bounces.handle(forged + b" " * i).outcome == "forged"
    unmatched = bounces.handle(b"From: someone@example.net\r\nSubject: Undelivered <b>mail</b>\r\n\r\n<script>alert(1)"
                               b"</script>\r\n")
    db.session.commit()
    assert unmatched.outcome == "unmatched" and bounces.score("victim@example.org") == 0
    assert db.session.get(Suppression, "victim@example.org") is None
    login(make_user("root", admin=True))
    page = client.get("/admin/mail-servers/bounces").get_data(as_text=True)
    assert "Undelivered &lt;b&gt;mail&lt;/b&gt;" in page and "wrong signature" in page
    shown = client.get(f"/admin/mail-servers/bounces/{unmatched.id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "<script>alert" not in shown
    assert bounces.handle(forged).id == db.session.scalars(db.select(Bounce.id).where(
        Bounce.outcome == "forged")).first()  # the same bytes again count once


def test_an_admin_removes_a_suppression(app, client, make_user, login):
    bounces.suppress("gone@example.org", "5.1.1 User unknown", 4)
    db.session.commit()
    login(make_user("root", admin=True))
    response = client.post("/admin/mail-servers/bounces/remove", data={"address": "gone@example.org"},
                           follow_redirects=True)
    assert "gone@example.org receives mail again" in response.get_data(as_text=True)
    assert db.session.get(Suppression, "gone@example.org") is None


def mailman_samples() -> list[tuple[str, list[str], bool]]:
    """flufl.bounce's own real-world bounces and what its test suite expects of each: (file, addresses, temporary).
    The sdist is fetched from the package index once; nothing of it is in this repository."""
    if not (SAMPLES / "tests" / "data").is_dir():
        # Into a directory of its own, then renamed: the SQLite and PostgreSQL runs may both get here at once.
        SAMPLES.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=SAMPLES.parent))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d",
                        str(work), "flufl.bounce==6.0.0"], check=True, timeout=300)
        with tarfile.open(work / "flufl_bounce-6.0.0.tar.gz") as archive:
            archive.extractall(work, filter="data")
        try:
            (work / SAMPLES.name).rename(SAMPLES)
        except OSError:
            assert (SAMPLES / "tests" / "data").is_dir()  # the other run put its copy there first
        shutil.rmtree(work, ignore_errors=True)
    tree = ast.parse((SAMPLES / "tests" / "test_detectors.py").read_text())
    table = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "DETECTORS")
    expected: dict[str, tuple[list[str], bool]] = {}
    for _detector, name, addresses, temporary in table:
        if addresses or name not in expected:
            expected[name] = ([a.decode() for a in addresses], temporary)
    return [(name, addresses, temporary) for name, (addresses, temporary) in sorted(expected.items())]


def test_mailmans_real_world_bounces_are_matched_and_classified(app, sinks, bounce_box):
    add_server(sinks, sinks.plain)
    bounces.mailbox().threshold = 100  # many samples bounce the same userx@example.com: keep mailing it here
    db.session.commit()
    samples = mailman_samples()
    assert len(samples) > 100
    mails = [queue.queue_mail((addresses[0] if addresses else "someone@example.org").lower(), "Note", "Hello")
             for _name, addresses, _temporary in samples]
    db.session.commit()
    delivery.deliver_due()  # one mail to each sample's address, sent together, as a fan-out would
    envelopes = {m.message["Message-ID"]: m.mail_from for m in sinks.plain.messages}
    classified = 0
    for (name, addresses, temporary), mail in zip(samples, mails):
        raw = (SAMPLES / "tests" / "data" / name).read_bytes()
        bounce = bounces.handle(as_delivered(raw, envelopes[mail.message_id]))
        db.session.commit()
        assert bounce.mail_id == mail.id, name  # matched by its signed envelope, whatever the format
        if addresses:
            assert bounce.outcome == (SOFT if temporary else HARD), (name, bounce.outcome, bounce.diagnostic)
            classified += 1
        else:  # not a bounce Mailman recognizes: kept and listed, or a DSN's own verdict
            assert bounce.outcome in (HARD, SOFT, "not_a_bounce", "auto_reply"), name
    assert classified > 100


def test_the_bounce_settings_page_saves_and_refuses_bad_values(app, client, make_user, login):
    login(make_user("root", admin=True))
    form = {"enabled": "y", "address": "not an address", "threshold": "0", "expire_days": "30", "protocol": "imaps",
            "host": "imap.example.org", "port": "993", "folder": "INBOX", "username": "bounces", "password": "pw",
            "auth_method": "password"}
    page = client.post("/admin/mail-servers/bounces", data=form).get_data(as_text=True)
    assert "Choose 1 to 100." in page and db.session.get(BounceMailbox, 1) is None  # nothing saved
    form.update(address="bounces@example.org", threshold="3", password="pw\r\nA2 LOGOUT")  # a command smuggled in
    page = client.post("/admin/mail-servers/bounces", data=form).get_data(as_text=True)
    assert "Line breaks and NUL characters are not allowed here." in page and db.session.get(BounceMailbox, 1) is None
    form.update(password="pw")
    client.post("/admin/mail-servers/bounces", data=form)
    db.session.expire_all()
    box = db.session.get(BounceMailbox, 1)
    assert box.enabled and box.address == "bounces@example.org" and box.threshold == 3
    assert "pw" not in client.get("/admin/mail-servers/bounces").get_data(as_text=True).split('name="password"')[1][:80]
    envelope = bounces.envelope_sender()(42)
    assert envelope.startswith("bounces+42-") and envelope.endswith("@example.org")
    parsed = message_from_bytes(b"Delivered-To: " + envelope.encode() + b"\r\n\r\n", policy=policy.compat32)
    assert bounces._verp(parsed) == (42, envelope.split("-")[1].split("@")[0])
