"""Reply by email against real Dovecot: a watcher's reply becomes a comment; anything else is rejected."""
import logging

import pytest

from tests.archive.helpers import read_from_dovecot
from tests.notify.test_notifications import client_for, team  # noqa: F401  (team is a fixture)
from webapp.content.models import Comment, Page
from webapp.extensions import db
from webapp.notify import replies
from webapp.notify.models import ReplyMailbox
from webapp.security import secret_box


@pytest.fixture
def reply_box(app, dovecot):
    return read_from_dovecot(replies.mailbox(), dovecot, "replies@example.org")


def test_the_reply_mailbox_obeys_the_host_policy(app, dovecot, reply_box):
    """It reached loopback hosts no admin allowed: it connected to the raw name, not the checked address."""
    from webapp.settings import SiteSettings

    dovecot.deliver(reply_box, [b"Subject: hello\r\n\r\nx\r\n"])
    SiteSettings.get().mail_host_allowlist = ""
    db.session.commit()
    assert replies.fetch() == 0
    box = db.session.get(ReplyMailbox, 1)
    assert "is not allowed: it is a loopback address" in box.last_result and "127.0.0.1" not in box.last_result
    assert len(dovecot.mailbox_files(reply_box)) == 1  # nothing read, nothing removed


def reply(to: str, sender: str, body: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: Re: Team > Runbook\r\nMessage-ID: <r{abs(hash(body))}@x>\r\n"
            f"{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def test_replies_become_comments_and_strangers_are_rejected(app, team, run_jobs, sinks, dovecot, reply_box,  # noqa: F811
                                                           caplog):
    space, people = team
    bob, ann = client_for(app, people["bob"]), client_for(app, people["ann"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    ann.post("/spaces/TEAM/pages/new", data={"title": "Runbook", "body": "Step one."})
    run_jobs()
    (mail,) = [m.message for m in sinks.plain.messages]
    reply_to = mail["Reply-To"].addresses[0].addr_spec
    page = db.session.scalar(db.select(Page))
    assert reply_to.startswith(f"replies+r{people['bob'].id}-{page.id}-") and reply_to.endswith("@example.org")
    tampered = reply_to[:-len("@example.org") - 1] + ("0" if reply_to[-13] != "0" else "1") + "@example.org"
    dovecot.deliver(reply_box, [
        reply(reply_to, "Bob Example <bob@example.org>",
              "Agreed, ship it.\r\n\r\nOn Sun, 22 Nov 2026 at 08:00, Ann wrote:\r\n> Step one.\r\n"),
        reply(reply_to, "Mallory <mallory@evil.example>", "Mallory's comment"),
        reply(tampered, "Bob Example <bob@example.org>", "Tampered comment"),
        reply(reply_to, "bob@example.org", "I am on holiday", extra="Auto-Submitted: auto-replied\r\n"),
    ])
    with caplog.at_level(logging.WARNING, logger="webapp.notify.replies"):
        assert replies.fetch() == 4
    comments = list(db.session.scalars(db.select(Comment)))
    assert [(c.author_id, c.body, c.via) for c in comments] == [(people["bob"].id, "Agreed, ship it.", "email")]
    assert dovecot.mailbox_files(reply_box) == []  # handled, committed, then removed
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown sender mallory@evil.example" in logged and "bad signature" in logged
    assert "automatic reply" in logged
    # The same bytes again (a fetch cut short before the delete): no second comment.
    assert replies.handle(reply(reply_to, "Bob Example <bob@example.org>",
                                "Agreed, ship it.\r\n\r\nOn Sun, 22 Nov 2026 at 08:00, Ann wrote:\r\n> Step one.\r\n"
                                )) == "already handled"
    # The comment notifies the page's watchers like any other (ann watches the page she created).
    sinks.plain.recorder.reset()
    db.session.commit()
    run_jobs()
    assert [m.rcpt_tos for m in sinks.plain.messages] == [["ann@example.org"]]
    assert "Agreed, ship it." in sinks.plain.messages[0].message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("text, kept", [
    ("Yes.\n\nOn Mon, Ann <a@x> wrote:\n> old", "Yes."),
    ("Yes.\n> quoted\nMore.\n-- \nBob\nCEO", "Yes.\nMore."),
    ("Ja.\n\nAm 22.11.2026 um 08:00 schrieb Ann:\n> alt", "Ja."),
    ("Fine.\n-----Original Message-----\nFrom: Ann", "Fine."),
])
def test_quoted_text_and_signatures_are_stripped(text, kept):
    assert replies.strip_quoted(text) == kept


def test_reply_mailbox_form_explains_bad_input_and_keeps_the_password_secret(app, client, make_user, login):
    login(make_user("root", admin=True))
    good = {"enabled": "y", "address": "replies@example.org", "protocol": "imaps", "host": "mail.example.org",
            "port": "993", "username": "replies", "password": "mailbox-pw", "folder": "INBOX", "trusted_ca_pem": ""}
    for field, value, message in [("address", "replies", "Invalid email address"),
                                  ("host", "mail example", "Enter a host name such as"),
                                  ("port", "0", "The port must be between 1 and 65535."),
                                  ("username", "a\r\nb", "Line breaks and NUL characters are not allowed"),
                                  ("password", "", "Enter the mailbox password."),
                                  ("password", "pw\r\nA2 LOGOUT", "Line breaks and NUL characters are not allowed")]:
        page = client.post("/admin/mail-servers/replies", data=dict(good, **{field: value})).get_data(as_text=True)
        assert message in page, field
        db.session.expire_all()
        assert db.session.get(ReplyMailbox, 1) is None  # nothing saved
    assert client.post("/admin/mail-servers/replies", data=good).status_code == 302
    db.session.expire_all()
    box = replies.mailbox()
    assert box.enabled and secret_box().decrypt(box.password_encrypted) == "mailbox-pw"
    page = client.get("/admin/mail-servers/replies").get_data(as_text=True)
    assert "mailbox-pw" not in page and box.password_encrypted not in page
    changed = client.post("/admin/mail-servers/replies", data=dict(good, host="other.example.org", password=""))
    assert "enter the password again" in changed.get_data(as_text=True)
