"""Send Test Email against real aiosmtpd sinks: every security mode, with and without AUTH, and each failure."""
import pytest

from tests.outgoing.helpers import add_server
from tests.smtpsinks import PASSWORD, USERNAME, Tap
from webapp.extensions import db
from webapp.outgoing.models import SmtpServer, SmtpTest

MODES = [("plain", "none", False), ("plain_auth", "none", True), ("starttls", "starttls", False),
         ("starttls_auth", "starttls", True), ("tls", "tls", False), ("tls_auth", "tls", True)]


@pytest.fixture
def admin(make_user, login, client):
    user = make_user("ada", admin=True, full_name="Ada Lovelace")
    login(user)
    return user


def send_test(client, run_jobs, key, how="direct", to="ops@example.org", subject="Hello from the test"):
    response = client.htmx_post(f"/admin/mail-servers/{key}/test",
                                data={"to": to, "subject": subject, "body": "Line one.\nLine two.", "how": how})
    assert response.status_code == 200, response.get_data(as_text=True)
    run_jobs()
    test = db.session.scalar(db.select(SmtpTest).order_by(SmtpTest.id.desc()))
    page = client.htmx_get(f"/admin/mail-servers/tests/{test.id}").get_data(as_text=True)
    return test, page


@pytest.mark.parametrize("sink_name, security, auth", MODES)
def test_each_security_mode_delivers_one_message(client, admin, run_jobs, sinks, sink_name, security, auth):
    sink = getattr(sinks, sink_name)
    server = add_server(sinks, sink)
    test, page = send_test(client, run_jobs, server.id)
    assert "Delivered." in page and "250 2.0.0 Ok" in page
    assert len(sink.messages) == 1
    received = sink.messages[0]
    message = received.message
    assert message["From"].addresses[0].display_name == "Ada Lovelace (Spacemail)"
    assert message["From"].addresses[0].addr_spec == "spacemail@example.org"
    assert message["Subject"] == "[Spacemail] Hello from the test"
    assert message["Reply-To"].addresses[0].addr_spec == "ada@example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"] and message["Date"]
    assert message.get_body(("plain",)).get_content() == "Line one.\nLine two.\n"
    assert "<p" in message.get_body(("html",)).get_content()  # multipart/alternative with the HTML part
    assert received.login == (USERNAME if auth else None)
    if security == "starttls":
        assert received.tls
    # The conversation is shown, the password never.
    assert "The SMTP conversation" in page and PASSWORD not in page
    assert ("C: AUTH PLAIN ****" in page) == auth
    assert PASSWORD not in str(test.result)
    others = [s for s in sinks.all if s is not sink]
    assert all(not s.messages for s in others)
    listing = client.get("/admin/mail-servers").get_data(as_text=True)
    assert "Delivered" in listing


def test_through_the_queue_delivers_and_reports(client, admin, run_jobs, sinks):
    server = add_server(sinks, sinks.starttls_auth)
    test, page = send_test(client, run_jobs, server.id, how="queue")
    assert "Delivered" in page and "through the mail queue" in page
    assert len(sinks.starttls_auth.messages) == 1
    assert test.result["ok"] is True


def _failure(client, run_jobs, sinks, **overrides):
    server = add_server(sinks, overrides.pop("sink"), **overrides)
    test, page = send_test(client, run_jobs, server.id)
    assert "Not delivered." in page
    return test.result["kind"], page


def test_each_failure_has_its_own_message(client, admin, run_jobs, sinks):
    seen = {}
    seen["wrong port (STARTTLS on an implicit-TLS port)"] = _failure(client, run_jobs, sinks, sink=sinks.tls,
                                                                     security="starttls")
    seen["wrong port (SSL/TLS on a plain port)"] = _failure(client, run_jobs, sinks, sink=sinks.starttls,
                                                            security="tls")
    seen["untrusted"] = _failure(client, run_jobs, sinks, sink=sinks.starttls, trusted_ca_pem="")
    seen["no STARTTLS"] = _failure(client, run_jobs, sinks, sink=sinks.plain, security="starttls")
    seen["login refused"] = _failure(client, run_jobs, sinks, sink=sinks.tls_auth, password="not the password")
    sinks.plain.recorder.rcpt_plan.append("550 5.1.1 No such user here")
    seen["recipient refused"] = _failure(client, run_jobs, sinks, sink=sinks.plain)
    seen["no AUTH"] = _failure(client, run_jobs, sinks, sink=sinks.plain, username=USERNAME, password=PASSWORD)
    kinds = {label: kind for label, (kind, _page) in seen.items()}
    assert kinds == {
        "wrong port (STARTTLS on an implicit-TLS port)": "wrong_port_tls",
        "wrong port (SSL/TLS on a plain port)": "wrong_port_plain",
        "untrusted": "certificate_untrusted",
        "no STARTTLS": "starttls_missing",
        "login refused": "login_refused",
        "no AUTH": "auth_not_offered",
        "recipient refused": "recipient_refused",
    }
    assert "Check the address; the server does not accept mail for it." in seen["recipient refused"][1]
    assert "Choose SSL/TLS for this port" in seen["wrong port (STARTTLS on an implicit-TLS port)"][1]
    assert "issuer: CN=Spacemail SMTP Test CA" in seen["untrusted"][1]
    assert "Nothing was sent unencrypted" in seen["no STARTTLS"][1]
    assert "refused the username or password: 535" in seen["login refused"][1]
    assert all(not s.messages for s in sinks.all)


@pytest.mark.parametrize("case", ["no STARTTLS", "wrong port"])
def test_the_password_never_crosses_in_plaintext(client, admin, run_jobs, sinks, case):
    """With STARTTLS required but not offered, or TLS expected from a plain port, nothing secret is sent."""
    tap = Tap(sinks.plain_auth.port)
    try:
        security = "starttls" if case == "no STARTTLS" else "tls"
        kind, _page = _failure(client, run_jobs, sinks, sink=sinks.plain_auth, port=tap.port, security=security)
    finally:
        tap.close()
    assert kind == ("starttls_missing" if case == "no STARTTLS" else "wrong_port_plain")
    wire = bytes(tap.client_bytes)
    assert b"AUTH" not in wire.upper()
    assert PASSWORD.encode() not in wire and USERNAME.encode() not in wire
    assert sinks.plain_auth.recorder.auth_attempts == []


def test_clearing_saved_credentials_turns_authentication_off(client, admin, run_jobs, sinks):
    server = add_server(sinks, sinks.plain_auth)
    send_test(client, run_jobs, server.id)
    assert sinks.plain_auth.recorder.auth_attempts == [(USERNAME, PASSWORD)]
    form = {"name": server.name, "from_address": server.from_address, "from_name": server.from_name,
            "subject_prefix": "", "host": "localhost", "port": server.port, "security": "none", "username": "",
            "password": "", "timeout_seconds": 3, "reply_to_policy": "none", "trusted_ca_pem": ""}
    assert client.post(f"/admin/mail-servers/{server.id}/edit", data=form).status_code == 302
    db.session.expire_all()
    saved = db.session.get(SmtpServer, server.id)
    assert saved.username is None and saved.password_encrypted is None
    _test, page = send_test(client, run_jobs, server.id)
    assert "Delivered." in page
    assert sinks.plain_auth.recorder.auth_attempts == [(USERNAME, PASSWORD)]  # no second AUTH
    assert sinks.plain_auth.messages[-1].login is None
    assert "C: AUTH" not in page.split("The SMTP conversation")[1]


def test_bad_test_form_sends_nothing(client, admin, run_jobs, sinks):
    server = add_server(sinks, sinks.plain)
    response = client.htmx_post(f"/admin/mail-servers/{server.id}/test",
                                data={"to": "not an address", "subject": "x\r\nBcc: evil@example.org", "body": "b",
                                      "how": "direct"})
    text = response.get_data(as_text=True)
    assert "Not sent." in text
    run_jobs()
    assert sinks.plain.messages == []
    assert db.session.scalar(db.select(db.func.count(SmtpTest.id))) == 0


def test_the_send_button_waits_while_the_test_runs(client, admin, run_jobs, sinks):
    import re

    server = add_server(sinks, sinks.plain)
    started = client.htmx_post(f"/admin/mail-servers/{server.id}/test",
                               data={"to": "ops@example.org", "subject": "s", "body": "b", "how": "direct"})
    body = started.get_data(as_text=True)
    assert re.search(r"Sending the test email… <span class=\"muted\">\d+ seconds?</span>", body)  # elapsed
    assert re.search(r'<button[^>]*id="send-test-button"[^>]*disabled[^>]*hx-swap-oob="true">Sending…', body)
    run_jobs()
    test = db.session.scalar(db.select(SmtpTest).order_by(SmtpTest.id.desc()))
    done = client.htmx_get(f"/admin/mail-servers/tests/{test.id}").get_data(as_text=True)
    assert "Delivered." in done and re.search(r'id="send-test-button"[^>]*hx-swap-oob="true">Send test email<', done)


def test_a_timeout_is_named_with_its_seconds(client, admin, run_jobs, sinks):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never answers
    try:
        server = add_server(sinks, sinks.plain, port=silent.getsockname()[1], timeout_seconds=1)
        test, page = send_test(client, run_jobs, server.id)
    finally:
        silent.close()
    assert test.result["kind"] == "timeout" and "did not answer within 1 second." in page
