"""Space admins manage mail accounts: forms, bad input, secrets, the in-place toggle and protocol fields."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.archive.helpers import allow_loopback, message
from tests.archive.test_fetch import fetch_once
from webapp.oauth.credentials import mailbox_settings, secret_for
from webapp.archive import services
from webapp.archive.models import FetchRun, MailAccount, Message
from webapp.settings import SiteSettings
from webapp.spaces.services import create_site_space
from webapp.timeutil import utcnow

GOOD = {"name": "Support inbox", "description": "support@", "protocol": "imaps", "host": "mail.example.org",
        "port": "993", "username": "support@example.org", "password": "s3cret-pw", "folder": "INBOX"}


@pytest.fixture
def team(app, make_user, login, db):
    admin = make_user("ann")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    login(admin)
    return space


def account(db) -> MailAccount:
    return db.session.scalar(select(MailAccount))


def test_create_account_encrypts_the_password_and_never_renders_it(client, team, db):
    response = client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    assert response.status_code == 302
    saved = account(db)
    assert saved.password_encrypted and "s3cret-pw" not in saved.password_encrypted
    assert secret_for(saved) == "s3cret-pw"
    assert "s3cret-pw" not in repr(mailbox_settings(saved))
    page = client.get("/spaces/TEAM/mail-accounts").get_data(as_text=True)
    assert "Support inbox" in page and "mail.example.org:993" in page
    edit = client.get(f"/spaces/TEAM/mail-accounts/{saved.id}/edit").get_data(as_text=True)
    assert "s3cret-pw" not in edit and saved.password_encrypted not in edit


@pytest.mark.parametrize("field, value, message", [
    ("name", "", "This field is required."),
    ("host", "mail.example.org\r\nX", "Line breaks"),
    ("host", "bad host!", "Enter a host name"),
    ("port", "70000", "between 1 and 65535"),
    ("port", "abc", "Not a valid integer value"),
    ("username", "u\r\nDELE 1", "Line breaks"),
    ("password", "p\r\nQUIT", "Line breaks"),
    ("folder", "INBOX\r\na1 DELETE INBOX", "Line breaks"),
    ("protocol", "smtp", "Not a valid choice"),
    ("trusted_ca_pem", "not a certificate", "PEM form"),
])
def test_bad_input_is_refused_and_nothing_is_saved(client, team, db, field, value, message):
    response = client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, field: value})
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(MailAccount.id))) == 0


@pytest.mark.parametrize("field", ["name", "host", "username", "password", "folder"])
def test_a_nul_anywhere_is_refused_before_any_form_sees_it(client, team, db, field):
    """No field accepts NUL (PostgreSQL cannot hold one; mail clients would send it on): the whole request is a
    400 that says so, and nothing is saved."""
    response = client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, field: "a\x00b"})
    assert response.status_code == 400 and "NUL character" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(MailAccount.id))) == 0
    assert client.get("/spaces/TEAM/mail?q=a%00b").status_code == 400


def test_names_are_unique_in_a_space(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    again = client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, "name": "support INBOX"})
    assert "already has a mail account with that name" in again.get_data(as_text=True)
    assert db.session.scalar(select(func.count(MailAccount.id))) == 1


def test_changing_where_to_sign_in_needs_the_password_again(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    saved = account(db)
    url = f"/spaces/TEAM/mail-accounts/{saved.id}/edit"
    refused = client.post(url, data={**GOOD, "host": "evil.example.net", "password": ""})
    assert "enter the password again" in refused.get_data(as_text=True)
    db.session.refresh(saved)
    assert saved.host == "mail.example.org"
    kept = client.post(url, data={**GOOD, "description": "new words", "password": ""})
    assert kept.status_code == 302
    db.session.refresh(saved)
    assert saved.description == "new words" and secret_for(saved) == "s3cret-pw"
    client.post(url, data={**GOOD, "host": "mail2.example.org", "password": "other-pw"})
    db.session.refresh(saved)
    assert saved.host == "mail2.example.org" and secret_for(saved) == "other-pw"


def test_remove_asks_first_and_keeps_the_archive(client, team, make_user, dovecot, db, run_jobs):
    allow_loopback()
    user, password = dovecot.add_user()
    client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, "host": "localhost", "port": dovecot.ports["imaps"],
                                                        "username": user, "password": password,
                                                        "trusted_ca_pem": dovecot.ca.cert_pem})
    saved = account(db)
    dovecot.deliver(user, [message(1), message(2)])
    fetch_once(saved, run_jobs)
    confirm = client.get(f"/spaces/TEAM/mail-accounts/{saved.id}/remove").get_data(as_text=True)
    assert "Remove mail account" in confirm and "stays in this space" in confirm
    assert account(db) is not None
    client.post(f"/spaces/TEAM/mail-accounts/{saved.id}/remove")
    db.session.expire_all()
    assert account(db) is None
    assert db.session.scalar(select(func.count(Message.id))) == 2


def test_enable_toggle_in_place(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    saved = account(db)
    row = client.htmx_post(f"/spaces/TEAM/mail-accounts/{saved.id}/enabled", data={"value": "off"})
    body = row.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith(f'<tr id="account-{saved.id}"') and "Disabled" in body
    db.session.refresh(saved)
    assert saved.enabled is False
    assert services.queue_space_fetch(team) == []  # a disabled account is not fetched


def test_protocol_fields_follow_the_protocol_unless_the_port_was_edited(client, team):
    fragment = client.htmx_get("/spaces/TEAM/mail-accounts/protocol-fields?protocol=pop&port=993")
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and 'value="110"' in body and "Require STARTTLS" in body and "Folder" not in body
    custom = client.htmx_get("/spaces/TEAM/mail-accounts/protocol-fields?protocol=imaps&port=10993")
    body = custom.get_data(as_text=True)
    assert 'value="10993"' in body and "Folder" in body and "STARTTLS" not in body
    assert 'value="143"' in client.htmx_get("/spaces/TEAM/mail-accounts/protocol-fields?protocol=imap&port=")\
        .get_data(as_text=True)


def test_personal_space_cannot_hold_an_archive(client, make_user, login, db):
    login(make_user("bob"))
    response = client.post("/spaces/~bob/mail-accounts/new", data=GOOD)
    assert response.status_code == 403 and "cannot hold a mail archive" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(MailAccount.id))) == 0
    assert "Mail accounts" not in client.get("/spaces/~bob").get_data(as_text=True)


def test_with_the_app_switched_off_nothing_is_shown_reachable_or_fetched(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    SiteSettings.get().mail_archiving_enabled = False
    db.session.commit()
    home = client.get("/spaces/TEAM").get_data(as_text=True)
    assert "Mail accounts" not in home and ">Mail<" not in home
    for url in ("/spaces/TEAM/mail", "/spaces/TEAM/mail-accounts", "/spaces/TEAM/mail-accounts/new"):
        assert client.get(url).status_code == 404
    assert client.post("/spaces/TEAM/mail/fetch").status_code == 404
    assert services.queue_due_fetches() == 0
    assert db.session.scalar(select(func.count(FetchRun.id))) == 0


def test_schedule_fetches_each_account_once_per_interval(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, "name": "Second"})
    assert services.queue_due_fetches() == 2
    assert services.queue_due_fetches() == 0  # queued already: not again
    for run in db.session.scalars(select(FetchRun)):
        run.state, run.created_at = "done", utcnow() - timedelta(minutes=29)
    db.session.commit()
    assert services.queue_due_fetches() == 0
    SiteSettings.get().fetch_interval_minutes = 15
    db.session.commit()
    assert services.queue_due_fetches() == 2


def test_fetch_now_shows_the_running_fetch_instead_of_starting_another(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    first = client.htmx_post("/spaces/TEAM/mail/fetch").get_data(as_text=True)
    second = client.htmx_post("/spaces/TEAM/mail/fetch").get_data(as_text=True)
    assert "<html" not in first and "waiting for a worker" in first and 'hx-trigger="load delay:1s"' in second
    assert db.session.scalar(select(func.count(FetchRun.id))) == 1


def test_fetch_now_without_script_redirects_so_a_reload_fetches_nothing_more(client, team, db):
    client.post("/spaces/TEAM/mail-accounts/new", data=GOOD)
    response = client.post("/spaces/TEAM/mail/fetch")
    assert response.status_code == 303 and response.headers["Location"].endswith("/spaces/TEAM/mail")
    page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    assert "waiting for a worker" in page and "Fetching…" in page
    db.session.expire_all()
    for run in db.session.scalars(select(FetchRun)):
        run.state = "done"
    db.session.commit()
    client.get("/spaces/TEAM/mail")  # the reload is a GET: no second fetch
    assert db.session.scalar(select(func.count(FetchRun.id))) == 1


def test_three_failures_in_a_row_warn_the_space_admin(client, team, db, run_jobs):
    # localhost is not on the host allowlist: each fetch fails at once, without touching any network
    client.post("/spaces/TEAM/mail-accounts/new", data={**GOOD, "host": "localhost"})
    saved = account(db)
    for _ in range(3):
        run = fetch_once(saved, run_jobs)
        assert run.state == "failed" and run.error_message
    page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    assert re.search(r"failed its last 3 fetches", page)
    assert "failed its last 3 fetches" in client.get("/spaces/TEAM/mail-accounts").get_data(as_text=True)
