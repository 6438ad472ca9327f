"""Administration › Mail servers: the form's bad input, passwords never shown, the default, configuration."""
import pytest

from tests.outgoing.helpers import add_server
from tests.smtpsinks import PASSWORD, USERNAME
from webapp.extensions import db
from webapp.outgoing import queue
from webapp.outgoing.models import OutboundMail, SmtpServer

GOOD = {"name": "Relay", "from_address": "spacemail@example.org", "from_name": "${fullname} (Spacemail)",
        "subject_prefix": "[Spacemail]", "host": "smtp.example.org", "security": "starttls", "port": "587",
        "username": "mailer", "password": "pw-1", "timeout_seconds": "30", "reply_to_policy": "none",
        "trusted_ca_pem": ""}


@pytest.fixture
def admin(make_user, login):
    user = make_user("ada", admin=True, full_name="Ada Lovelace")
    login(user)
    return user


def count() -> int:
    return db.session.scalar(db.select(db.func.count(SmtpServer.id)))


@pytest.mark.parametrize("field, value, message", [
    ("from_address", "", "Enter the address mail is sent from."),
    ("from_address", "not-an-address", "Enter a mail address such as"),
    ("from_address", "a@example.org\r\nBcc: x@evil.example", "Line breaks and NUL characters are not allowed"),
    ("from_name", "Ann\nBcc: x@evil.example", "Line breaks and NUL characters are not allowed"),
    ("subject_prefix", "[x]\r\nBcc: y@evil.example", "Line breaks and NUL characters are not allowed"),
    ("host", "smtp example org", "Enter a host name such as"),
    ("port", "70000", "The port must be between 1 and 65535."),
    ("timeout_seconds", "0", "Choose 1 to 300 seconds."),
    ("password", "", "Enter the password for this username"),
    ("trusted_ca_pem", "not a certificate", "Paste the CA certificate in PEM form"),
])
def test_bad_input_is_explained_and_saves_nothing(client, admin, field, value, message):
    response = client.post("/admin/mail-servers/new", data=dict(GOOD, **{field: value}))
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert count() == 0


def test_password_is_encrypted_never_rendered_and_asked_again_when_the_server_changes(client, admin):
    assert client.post("/admin/mail-servers/new", data=GOOD).status_code == 302
    server = db.session.scalar(db.select(SmtpServer))
    assert "pw-1" not in server.password_encrypted
    page = client.get(f"/admin/mail-servers/{server.id}/edit").get_data(as_text=True)
    assert "pw-1" not in page and server.password_encrypted not in page
    # Same host, port and username: an empty password keeps the saved one.
    assert client.post(f"/admin/mail-servers/{server.id}/edit", data=dict(GOOD, password="")).status_code == 302
    db.session.expire_all()
    from webapp.outgoing.servers import profile

    assert profile(db.session.get(SmtpServer, server.id)).password == "pw-1"
    for change in ({"host": "smtp.example.net"}, {"port": "2525"}, {"username": "other"}):
        response = client.post(f"/admin/mail-servers/{server.id}/edit", data=dict(GOOD, password="", **change))
        assert "enter the password again" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(SmtpServer, server.id).host == "smtp.example.org"


def test_port_follows_security_unless_typed(client, admin):
    partial = client.htmx_get("/admin/mail-servers/security-fields?security=tls&port=587").get_data(as_text=True)
    assert 'value="465"' in partial and "<html" not in partial
    partial = client.htmx_get("/admin/mail-servers/security-fields?security=none&port=465").get_data(as_text=True)
    assert 'value="25"' in partial
    partial = client.htmx_get("/admin/mail-servers/security-fields?security=tls&port=2525").get_data(as_text=True)
    assert 'value="2525"' in partial


def test_from_name_preview_renders_the_template_for_the_admin(client, admin):
    response = client.htmx_get("/admin/mail-servers/preview", query_string={
        "from_name": "{{7*7}} ${fullname} at ${email.hostname} ${nope}", "from_address": "site@example.org"})
    text = response.get_data(as_text=True)
    assert "{{7*7}} Ada Lovelace at example.org ${nope} &lt;site@example.org&gt;" in text
    assert "<html" not in text


def test_default_changes_in_place(client, admin, sinks):
    first = add_server(sinks, sinks.plain, name="First")
    second = add_server(sinks, sinks.starttls, name="Second")
    page = client.get("/admin/mail-servers").get_data(as_text=True)
    first_row = page.split(f'id="server-{first.id}"')[1].split("</tr>")[0]
    assert "Default" in first_row and "Make default" not in first_row  # nothing marked: the first listed
    partial = client.htmx_post(f"/admin/mail-servers/{second.id}/default").get_data(as_text=True)
    assert partial.startswith('<div id="server-list">')
    row = partial.split(f'id="server-{second.id}"')[1].split("</tr>")[0]
    assert "Default" in row and "Make default" not in row
    assert "Make First the default" in partial
    db.session.expire_all()
    assert db.session.get(SmtpServer, second.id).is_default and not db.session.get(SmtpServer, first.id).is_default
    # Mail now goes to the second server first.
    from webapp.outgoing.servers import ordered_profiles

    assert [p.name for p in ordered_profiles()] == ["Second", "First"]


def test_removing_a_server_sends_its_pinned_mail_through_the_default(client, admin, sinks):
    server = add_server(sinks, sinks.plain)
    mail = queue.queue_mail("a@example.org", "s", "b", server_key=server.key)
    db.session.commit()
    page = client.get(f"/admin/mail-servers/{server.id}/remove").get_data(as_text=True)
    assert "Remove the mail server" in page
    assert client.post(f"/admin/mail-servers/{server.id}/remove").status_code == 302
    assert count() == 0
    db.session.expire_all()
    assert db.session.get(OutboundMail, mail.id).server_key is None


def test_a_server_from_configuration_is_listed_read_only_and_sends(app, client, admin, run_jobs, sinks):
    app.config.update(SMTP_URL=f"smtp+starttls://{USERNAME}:{PASSWORD.replace(' ', '%20')}@localhost:"
                               f"{sinks.starttls_auth.port}", SMTP_FROM="site@example.org",
                      SMTP_CA_PEM=sinks.ca.cert_pem)
    page = client.get("/admin/mail-servers").get_data(as_text=True)
    assert "from configuration" in page and f"localhost:{sinks.starttls_auth.port}" in page
    assert PASSWORD not in page and "/admin/mail-servers/config/edit" not in page
    assert "Default" in page.split('id="server-config"')[1].split("</tr>")[0]
    queue.queue_mail("reader@example.org", "Configured", "Body")
    db.session.commit()
    run_jobs()
    (received,) = sinks.starttls_auth.messages
    assert received.login == USERNAME and received.message["From"].addresses[0].addr_spec == "site@example.org"
    assert count() == 0  # nothing of it went into the database


def test_an_unreadable_configuration_is_explained(app, client, admin):
    app.config.update(SMTP_URL="mailto://nope", SMTP_FROM="site@example.org")
    page = client.get("/admin/mail-servers").get_data(as_text=True)
    assert "SPACEMAIL_SMTP_URL must look like smtp+starttls://" in page


def test_retry_schedule_is_validated(client, admin):
    page = client.post("/admin/mail-queue/settings", data={"mail_retry_minutes": "1, soon, 60"})
    assert "Enter one to ten whole numbers of minutes" in page.get_data(as_text=True)
    assert client.post("/admin/mail-queue/settings", data={"mail_retry_minutes": "2 10 30"}).status_code == 302
    from webapp.settings import retry_schedule

    assert retry_schedule() == [2, 10, 30]


def test_queue_page_and_partial(client, admin):
    assert "<html" in client.get("/admin/mail-queue").get_data(as_text=True)
    partial = client.htmx_get("/admin/mail-queue")
    assert "<html" not in partial.get_data(as_text=True) and "HX-Request" in partial.headers["Vary"]
