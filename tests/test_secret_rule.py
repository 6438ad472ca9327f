"""The one rule for stored secrets: any change of where a password goes or how it is protected needs it again.

An attacker with a space admin's session (or a careless edit) must not be able to untick STARTTLS, swap the trusted CA
or point the account elsewhere and have the stored password sent there: for mail accounts, the reply mailbox and
SMTP servers alike.
"""
import pytest
from sqlalchemy import select

from tests.mailservers import make_ca
from webapp.oauth.credentials import secret_for
from webapp.archive.models import MailAccount
from webapp.extensions import db
from webapp.notify.models import ReplyMailbox
from webapp.outgoing.models import SmtpServer
from webapp.security import secret_box
from webapp.spaces.services import create_site_space

OTHER_CA = make_ca("Mallory CA").cert_pem
FIRST_CA = make_ca("First CA").cert_pem

ACCOUNT = {"name": "Support", "description": "", "protocol": "imap", "host": "mail.example.org", "port": "143",
           "username": "support", "password": "s3cret-pw", "folder": "INBOX", "require_starttls": "y",
           "trusted_ca_pem": FIRST_CA}
REPLIES = {"enabled": "y", "address": "replies@example.org", "protocol": "imap", "host": "mail.example.org",
           "port": "143", "username": "replies", "password": "mailbox-pw", "folder": "INBOX", "require_starttls": "y",
           "trusted_ca_pem": FIRST_CA}
SMTP = {"name": "Relay", "from_address": "spacemail@example.org", "from_name": "${fullname}", "subject_prefix": "",
        "host": "smtp.example.org", "security": "starttls", "port": "587", "username": "mailer", "password": "pw-1",
        "timeout_seconds": "30", "reply_to_policy": "none", "trusted_ca_pem": FIRST_CA}


def without(values: dict, key: str) -> dict:
    return {k: v for k, v in values.items() if k != key}


# Each change names a field that decides where the secret goes or how it is protected.
MAILBOX_CHANGES = [
    ("STARTTLS unticked", lambda v: without(v, "require_starttls")),
    ("CA replaced", lambda v: dict(v, trusted_ca_pem=OTHER_CA)),
    ("CA removed", lambda v: dict(v, trusted_ca_pem="")),
    ("protocol", lambda v: dict(v, protocol="pop", port="143")),
    ("host", lambda v: dict(v, host="evil.example.net")),
    ("port", lambda v: dict(v, port="1143")),
    ("username", lambda v: dict(v, username="other")),
]
SMTP_CHANGES = [
    ("security off", lambda v: dict(v, security="none")),
    ("CA replaced", lambda v: dict(v, trusted_ca_pem=OTHER_CA)),
    ("CA removed", lambda v: dict(v, trusted_ca_pem="")),
    ("host", lambda v: dict(v, host="evil.example.net")),
    ("port", lambda v: dict(v, port="2525")),
    ("username", lambda v: dict(v, username="other")),
]


@pytest.fixture
def admin(app, make_user, login):
    root = make_user("root", admin=True)
    create_site_space(root, "TEAM", "Team")
    db.session.commit()
    login(root)
    return root


def snapshot(row) -> tuple:
    db.session.expire_all()
    row = db.session.get(type(row), row.id)
    fields = ("protocol", "security", "host", "port", "username", "require_starttls", "trusted_ca_pem")
    return tuple(getattr(row, f, None) for f in fields)


@pytest.mark.parametrize("what, change", MAILBOX_CHANGES, ids=[c[0] for c in MAILBOX_CHANGES])
def test_mail_account(client, admin, what, change):
    assert client.post("/spaces/TEAM/mail-accounts/new", data=ACCOUNT).status_code == 302
    account = db.session.scalar(select(MailAccount))
    before = snapshot(account)
    url = f"/spaces/TEAM/mail-accounts/{account.id}/edit"
    refused = client.post(url, data=dict(change(ACCOUNT), password=""))
    assert refused.status_code == 200 and "enter the password again" in refused.get_data(as_text=True)
    assert snapshot(account) == before
    # Test Connection with the changed values and no password is refused the same way, before any job is queued.
    tested = client.htmx_post("/spaces/TEAM/mail-accounts/test", data=dict(change(ACCOUNT), password="",
                                                                          account_id=account.id))
    assert "enter the password again" in tested.get_data(as_text=True)
    # With the password typed again, the change is saved.
    assert client.post(url, data=dict(change(ACCOUNT), password="new-pw")).status_code == 302
    assert snapshot(account) != before
    assert secret_for(db.session.get(MailAccount, account.id)) == "new-pw"


def test_mail_account_unrelated_edits_keep_the_password(client, admin):
    client.post("/spaces/TEAM/mail-accounts/new", data=ACCOUNT)
    account = db.session.scalar(select(MailAccount))
    saved = client.post(f"/spaces/TEAM/mail-accounts/{account.id}/edit",
                        data=dict(ACCOUNT, password="", name="Renamed", folder="Archive", host="MAIL.example.org"))
    assert saved.status_code == 302
    db.session.expire_all()
    account = db.session.get(MailAccount, account.id)
    assert account.name == "Renamed" and secret_for(account) == "s3cret-pw"


@pytest.mark.parametrize("what, change", MAILBOX_CHANGES, ids=[c[0] for c in MAILBOX_CHANGES])
def test_reply_mailbox(client, admin, what, change):
    assert client.post("/admin/mail-servers/replies", data=REPLIES).status_code == 302
    box = db.session.get(ReplyMailbox, 1)
    before = snapshot(box)
    refused = client.post("/admin/mail-servers/replies", data=dict(change(REPLIES), password=""))
    assert "enter the password again" in refused.get_data(as_text=True)
    assert snapshot(box) == before
    assert client.post("/admin/mail-servers/replies", data=dict(change(REPLIES), password="pw-2")).status_code == 302
    db.session.expire_all()
    assert secret_box().decrypt(db.session.get(ReplyMailbox, 1).password_encrypted) == "pw-2"


@pytest.mark.parametrize("what, change", SMTP_CHANGES, ids=[c[0] for c in SMTP_CHANGES])
def test_smtp_server(client, admin, what, change):
    assert client.post("/admin/mail-servers/new", data=SMTP).status_code == 302
    server = db.session.scalar(select(SmtpServer))
    before = snapshot(server)
    refused = client.post(f"/admin/mail-servers/{server.id}/edit", data=dict(change(SMTP), password=""))
    assert "enter the password again" in refused.get_data(as_text=True)
    assert snapshot(server) == before
    saved = client.post(f"/admin/mail-servers/{server.id}/edit", data=dict(change(SMTP), password="pw-2"))
    assert saved.status_code == 302 and snapshot(server) != before
