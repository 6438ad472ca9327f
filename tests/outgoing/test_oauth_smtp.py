"""SMTP servers that sign in with a provider: XOAUTH2/OAUTHBEARER against a real SMTP server (aiosmtpd) that asks
the authorization server about each token; mail waits in the queue (never the error queue) while the sign-in needs
reconnecting, and goes out after the reconnect."""
import pytest
from sqlalchemy import select

from tests.oauth_helpers import connect, make_provider
from tests.outgoing.test_send_test_email import send_test
from webapp.extensions import db
from webapp.oauth.models import GRANT_RECONNECT, OAuthGrant
from webapp.outgoing import queue
from webapp.outgoing.models import FAILED, QUEUED, SENT, OutboundMail, SmtpServer

ADDRESS = "mailer@mail.test"


@pytest.fixture
def root(app, make_user, login, oauth_server):
    user = make_user("ada", admin=True, full_name="Ada Lovelace")
    login(user)
    return user


def server_form(sink, provider, **overrides):
    form = {"name": "Provider SMTP", "from_address": "spacemail@example.org", "from_name": "${fullname}", "subject_prefix": "",
            "host": "localhost", "security": "starttls", "port": str(sink.port), "username": "", "password": "",
            "timeout_seconds": "10", "reply_to_policy": "none", "trusted_ca_pem": sink.ca.cert_pem,
            "auth_method": f"oauth:{provider.id}", "return_to": "/admin/mail-servers/new"}
    form.update(overrides)
    return form


def connected_server(app, client, oauth_server, sink) -> SmtpServer:
    provider = make_provider(app, oauth_server)
    form = server_form(sink, provider)
    ticket = connect(client, form, ADDRESS)
    page = client.get(f"/admin/mail-servers/new?oauth={ticket}").get_data(as_text=True)
    assert f"Connected as <strong>{ADDRESS}</strong>" in page
    saved = client.post("/admin/mail-servers/new", data=dict(form, username=ADDRESS, oauth_ticket=ticket))
    assert saved.status_code == 302, saved.get_data(as_text=True)
    return db.session.scalar(select(SmtpServer))


def test_send_test_email_signs_in_with_a_token(app, client, root, run_jobs, oauth_server, oauth_smtp):
    server = connected_server(app, client, oauth_server, oauth_smtp)
    assert server.auth_method.startswith("oauth:") and server.password_encrypted is None
    test, page = send_test(client, run_jobs, server.id)
    assert "Delivered." in page, page
    assert [m.login for m in oauth_smtp.messages] == [ADDRESS]
    assert oauth_smtp.recorder.token_logins == [("OAUTHBEARER", ADDRESS, True)]
    assert "C: AUTH OAUTHBEARER ****" in page
    grant = db.session.get(OAuthGrant, server.oauth_grant_id)
    from webapp.security import secret_box

    assert secret_box().decrypt(grant.access_token_encrypted) not in page + str(test.result)


def test_mail_waits_while_reconnect_is_needed_then_goes_out(app, client, root, run_jobs, oauth_server, oauth_smtp):
    server = connected_server(app, client, oauth_server, oauth_smtp)
    grant = db.session.get(OAuthGrant, server.oauth_grant_id)
    grant.access_expires_at = None  # renewing is due: the provider will refuse it
    db.session.commit()
    oauth_server.revoke_user(ADDRESS)
    for i in range(3):
        queue.queue_mail(f"person{i}@example.org", f"Notice {i}", "Body")
    db.session.commit()
    run_jobs()
    rows = db.session.scalars(select(OutboundMail).order_by(OutboundMail.id)).all()
    assert {r.state for r in rows} == {QUEUED} and {r.attempts for r in rows} == {0}
    assert all("Reconnect needed" in r.last_error for r in rows)
    assert db.session.get(OAuthGrant, grant.id).status == GRANT_RECONNECT
    assert not oauth_smtp.messages
    assert "Reconnect needed" in client.get("/admin/mail-servers").get_data(as_text=True)
    assert "SMTP server Provider SMTP" in client.get("/admin/sign-in-providers").get_data(as_text=True)
    assert "1 to reconnect" in client.get("/admin/users").get_data(as_text=True)  # on every Administration tab

    edit = f"/admin/mail-servers/{server.id}/edit"
    form = server_form(oauth_smtp, grant.provider, username=ADDRESS,
                       return_to=edit)
    ticket = connect(client, form, ADDRESS)
    assert client.post(edit, data=dict(form, oauth_ticket=ticket)).status_code == 302
    run_jobs()
    rows = db.session.scalars(select(OutboundMail).where(OutboundMail.recipient.like("person%"))).all()
    assert {r.state for r in rows} == {SENT}
    assert sorted(m.rcpt_tos[0] for m in oauth_smtp.messages if m.rcpt_tos[0].startswith("person")) == [
        f"person{i}@example.org" for i in range(3)]
    assert db.session.scalar(select(OutboundMail).where(OutboundMail.state == FAILED)) is None


def test_a_token_for_another_mailbox_is_refused_by_the_server(app, client, root, run_jobs, oauth_server, oauth_smtp):
    server = connected_server(app, client, oauth_server, oauth_smtp)
    server.username = "someone-else@mail.test"
    db.session.commit()
    test, page = send_test(client, run_jobs, server.id)
    assert "refused the access token" in page
    assert oauth_smtp.recorder.token_logins[-1] == ("OAUTHBEARER", "someone-else@mail.test", False)
