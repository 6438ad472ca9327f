"""Test Connection against real servers: success with what the server offered, or one clear cause."""
import re
import socket
import threading

import pytest
from sqlalchemy import select

from tests.archive.helpers import PORT_OF, allow_loopback
from webapp.archive.mailbox import IMAPSession, open_session, probe
from webapp.mailnet import MailboxError, MailboxSettings, check_fields, resolve_allowed
from webapp.archive.models import ConnectionTest
from webapp.spaces.services import create_site_space


def settings(dovecot, protocol, username, password, **kw) -> MailboxSettings:
    values = dict(protocol=protocol, host="localhost", port=dovecot.ports[PORT_OF[protocol]], username=username,
                  password=password, require_starttls=protocol in ("pop", "imap"), trusted_ca_pem=dovecot.ca.cert_pem,
                  timeout=5)
    values.update(kw)
    return MailboxSettings(**values)


@pytest.fixture
def loopback(app):
    """The real servers here listen on loopback, which the host policy allows only when an admin says so."""
    allow_loopback()


def failure(s: MailboxSettings) -> MailboxError:
    with pytest.raises(MailboxError) as caught:
        probe(s)
    return caught.value


@pytest.mark.parametrize("protocol", ["imap", "imaps", "pop", "pops"])
def test_success_reports_tls_and_count(loopback, dovecot, protocol):
    user, password = dovecot.add_user()
    dovecot.deliver(user, [b"Subject: a\r\n\r\nx\r\n", b"Subject: b\r\n\r\ny\r\n"])
    info = probe(settings(dovecot, protocol, user, password))
    assert info.message_count == 2 and info.tls_version in ("TLSv1.2", "TLSv1.3")
    assert ("UIDPLUS" if protocol.startswith("imap") else "UIDL") in info.capabilities


def test_untrusted_certificate_names_subject_and_issuer_until_its_ca_is_added(loopback, dovecot):
    user, password = dovecot.add_user()
    error = failure(settings(dovecot, "imaps", user, password, trusted_ca_pem=None))
    assert error.kind == "certificate_untrusted"
    assert "CN=localhost" in error.message and "CN=Spacemail Test CA" in error.message
    starttls = failure(settings(dovecot, "pop", user, password, trusted_ca_pem=None))
    assert starttls.kind == "certificate_untrusted" and "CN=Spacemail Test CA" in starttls.message
    assert probe(settings(dovecot, "imaps", user, password)).tls_version


def test_certificate_for_another_name_is_refused(loopback, dovecot):
    user, password = dovecot.add_user()
    with pytest.raises(MailboxError) as caught:  # a name that is not the certificate's, on the same server
        IMAPSession(settings(dovecot, "imaps", user, password, host="mail.other.test"), "127.0.0.1")
    error = caught.value
    assert error.kind == "certificate_untrusted" and "mismatch" in error.message.lower()


def test_wrong_password_and_missing_folder(loopback, dovecot):
    user, password = dovecot.add_user()
    assert failure(settings(dovecot, "imaps", user, "wrong")).kind == "login_refused"
    assert failure(settings(dovecot, "pops", user, "wrong")).kind == "login_refused"
    error = failure(settings(dovecot, "imaps", user, password, folder="Archive/Nope"))
    assert error.kind == "folder_missing" and "Archive/Nope" in error.message


def test_a_pop3_mailbox_another_session_holds_is_waited_for_then_named(loopback, dovecot):
    """Dovecot answers PASS with [IN-USE] while another POP3 session holds the mailbox (after waiting ~10 s for it,
    and again when we try once more): the admin is told that, not that the password is wrong."""
    import poplib

    user, password = dovecot.add_user()
    dovecot.deliver(user, [b"Subject: a\r\n\r\nx\r\n"])
    other = poplib.POP3("127.0.0.1", dovecot.ports["pop3"])
    other.user(user)
    other.pass_(password)
    error = failure(settings(dovecot, "pops", user, password, timeout=30))
    assert error.kind == "mailbox_in_use" and "another POP3 session holds the mailbox" in error.message
    release = threading.Timer(0.4, other.quit)  # a session that ends while we wait, as a killed worker's does
    release.start()
    try:
        assert probe(settings(dovecot, "pops", user, password, timeout=30)).message_count == 1
    finally:
        release.join()


def test_starttls_not_offered_never_falls_back(loopback, dovecot_without_tls):
    user, password = dovecot_without_tls.add_user()
    for protocol in ("imap", "pop"):
        error = failure(settings(dovecot_without_tls, protocol, user, password))
        assert error.kind == "starttls_missing"


def test_implicit_tls_to_a_plain_port(loopback, dovecot):
    user, password = dovecot.add_user()
    error = failure(settings(dovecot, "imaps", user, password, port=dovecot.ports["imap"]))
    assert error.kind in ("tls_failed", "closed")


def test_refused_and_timed_out(loopback):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert failure(MailboxSettings("imaps", "localhost", closed_port, "u", "p", timeout=2)).kind == "refused"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never says a word
    try:
        error = failure(MailboxSettings("imap", "localhost", silent.getsockname()[1], "u", "p", timeout=1))
        assert error.kind == "timeout" and "did not answer within 1 second (the timeout)" in error.message
    finally:
        silent.close()


def test_a_service_that_is_not_a_mail_server_is_not_echoed(loopback):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2 secret-banner\r\n")
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        error = failure(MailboxSettings("pop", "localhost", server.getsockname()[1], "u", "p", timeout=3,
                                        require_starttls=False))
    finally:
        thread.join()
        server.close()
    assert error.kind == "not_mail_server" and "secret-banner" not in error.message and "SSH" not in error.message


@pytest.mark.parametrize("field", ["host", "username", "password", "folder"])
@pytest.mark.parametrize("bad", ["a\r\nb", "a\nb", "a\x00b"])
def test_client_layer_refuses_line_breaks_and_nul(field, bad):
    values = dict(protocol="imap", host="localhost", port=143, username="u", password="p", folder="INBOX")
    values[field] = bad
    with pytest.raises(MailboxError) as caught:
        check_fields(MailboxSettings(**values))
    assert caught.value.kind == "invalid"
    with pytest.raises(MailboxError):
        open_session(MailboxSettings(**values))  # refused before any name is resolved or anything sent


def test_host_policy_public_only_by_default_and_the_admins_list():
    with pytest.raises(MailboxError) as caught:
        resolve_allowed("localhost", 993, "")
    assert caught.value.kind == "host_not_allowed" and "Administration" in caught.value.message
    # Said in words, never the address behind the name (that would map the network for whoever asks).
    assert "loopback" in caught.value.message and "127.0.0.1" not in caught.value.message
    assert "::1" not in caught.value.message and "LOCALHOST (" not in caught.value.message.upper()
    for address, words in (("10.1.2.3", "private network"), ("169.254.169.254", "link-local"),
                           ("0.0.0.0", "loopback"), ("100.64.0.1", "non-public")):
        with pytest.raises(MailboxError) as caught:
            resolve_allowed(address, 993, "")
        assert words in caught.value.message and caught.value.message.count(address) == 1  # only as typed
    for private in ("10.1.2.3", "192.168.0.5", "169.254.169.254", "::1", "0.0.0.0"):
        with pytest.raises(MailboxError):
            resolve_allowed(private, 993, "")
    assert resolve_allowed("127.0.0.1", 993, "127.0.0.0/8") == "127.0.0.1"
    assert resolve_allowed("localhost", 993, "localhost") in ("127.0.0.1", "::1")
    assert resolve_allowed("10.1.2.3", 993, "10.0.0.0/8\n# the LAN") == "10.1.2.3"
    assert resolve_allowed("8.8.8.8", 993, "") == "8.8.8.8"  # public: allowed (no connection is made here)
    with pytest.raises(MailboxError) as caught:
        resolve_allowed("no-such-host.invalid", 993, "")
    assert caught.value.kind == "name_not_found"


def test_connection_test_job_through_the_form(app, client, make_user, login, dovecot, db, run_jobs):
    admin = make_user("ann")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    login(admin)
    user, password = dovecot.add_user()
    form = {"name": "Inbox", "protocol": "imaps", "host": "localhost", "port": dovecot.ports["imaps"],
            "username": user, "password": password, "folder": "INBOX", "trusted_ca_pem": dovecot.ca.cert_pem}

    blocked = client.htmx_post("/spaces/TEAM/mail-accounts/test", data=form)
    run_id = int(re.search(r'id="test-(\d+)"', blocked.get_data(as_text=True)).group(1))
    run_jobs()
    result = client.htmx_get(f"/spaces/TEAM/mail-accounts/tests/{run_id}").get_data(as_text=True)
    assert "Connection failed." in result and "is not allowed: it is a loopback address" in result
    assert "127.0.0.1" not in result

    allow_loopback()
    started = client.htmx_post("/spaces/TEAM/mail-accounts/test", data=form)
    body = started.get_data(as_text=True)
    assert "<html" not in body and "Testing the connection" in body
    assert re.search(r'<button[^>]*id="test-connection-button"[^>]*disabled[^>]*hx-swap-oob="true">Testing…', body)
    run_id = int(re.search(r'id="test-(\d+)"', body).group(1))
    test = db.session.scalar(select(ConnectionTest).where(ConnectionTest.job_run_id == run_id))
    assert test.password_encrypted and password not in test.password_encrypted
    from rq import Queue
    from redis import Redis

    queued = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(app.config["REDIS_URL"])).jobs
    assert all(password not in repr(job.args) + repr(job.kwargs) for job in queued)
    run_jobs()
    result = client.htmx_get(f"/spaces/TEAM/mail-accounts/tests/{run_id}").get_data(as_text=True)
    assert "Connection works." in result and "TLSv1." in result and "IMAP4REV1" in result.upper()
    assert re.search(r'<button[^>]*id="test-connection-button"[^>]*hx-swap-oob="true">Test connection<', result)
    db.session.refresh(test)
    assert test.password_encrypted is None  # not kept once tested
    assert space.id == test.space_id


def test_connection_test_is_rate_limited_per_user(app, client, make_user, login, db):
    app.config["TEST_CONNECTION_RATE"] = "2 per minute"
    admin = make_user("ann")
    create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    login(admin)
    form = {"name": "x", "protocol": "imaps", "host": "mail.example.org", "port": 993, "username": "u",
            "password": "p", "folder": "INBOX"}
    for _ in range(2):
        assert client.htmx_post("/spaces/TEAM/mail-accounts/test", data=form).status_code == 200
    limited = client.htmx_post("/spaces/TEAM/mail-accounts/test", data=form)
    assert limited.status_code == 429 and "wait a minute" in limited.get_data(as_text=True)
    assert limited.headers.get("Retry-After")


@pytest.mark.parametrize("protocol", ["imap", "pop"])
def test_a_plain_session_to_a_server_offering_starttls_says_so(loopback, dovecot, dovecot_without_tls, protocol):
    user, password = dovecot.add_user()
    plain = probe(settings(dovecot, protocol, user, password, require_starttls=False))
    assert plain.tls_version is None and plain.offers_starttls
    assert not probe(settings(dovecot, protocol, user, password)).offers_starttls  # STARTTLS on: nothing to say
    other, other_password = dovecot_without_tls.add_user()
    assert not probe(settings(dovecot_without_tls, protocol, other, other_password, require_starttls=False,
                              trusted_ca_pem=None)).offers_starttls  # nothing to turn on there
