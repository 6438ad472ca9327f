"""Server-side sessions and sign-in throttling: what an attacker with a copied cookie or a password list meets."""
import re
import time

import pytest
from sqlalchemy import func, select

from tests.conftest import PASSWORD
from webapp.auth.models import UserSession
from webapp.extensions import db


def new_client(app, client):
    other = app.test_client()
    other.__class__ = type(client)
    return other


def cookies_of(c) -> dict[str, str]:
    return {name: c.get_cookie(name).value for name in ("session", "remember_token") if c.get_cookie(name)}


def replay(app, client, cookies: dict[str, str]):
    """Another browser carrying copies of `cookies`: signed in or not?"""
    thief = new_client(app, client)
    for name, value in cookies.items():
        thief.set_cookie(name, value, domain="localhost")
    return thief.get("/profile").status_code == 200


def session_count(user=None) -> int:
    query = select(func.count(UserSession.id))
    if user is not None:
        query = query.where(UserSession.user_id == user.id)
    db.session.expire_all()
    return db.session.scalar(query)


@pytest.mark.parametrize("which", ["session", "remember_token", "both"])
def test_a_copied_cookie_is_worthless_after_sign_out(app, client, make_user, which):
    make_user("ann")
    assert client.post("/login", data={"login": "ann", "password": PASSWORD, "remember": "y"}).status_code == 302
    copied = cookies_of(client)
    assert set(copied) == {"session", "remember_token"}
    chosen = copied if which == "both" else {which: copied[which]}
    assert replay(app, client, chosen)  # the copy works while the session lives (that is what a cookie is)
    signed_out = client.post("/logout")
    assert signed_out.status_code == 302
    assert any(h.startswith("remember_token=;") for h in signed_out.headers.getlist("Set-Cookie"))  # deleted
    assert not replay(app, client, chosen)
    assert session_count() == 0


def test_profile_lists_sessions_and_signs_one_out(app, client, make_user, login):
    ann = make_user("ann")
    login(ann)
    laptop = new_client(app, client)
    laptop.post("/login", data={"login": "ann", "password": PASSWORD}, headers={"User-Agent": "LaptopBrowser/1.0"})
    page = client.get("/profile").get_data(as_text=True)
    assert "LaptopBrowser/1.0" in page and "(this browser)" in page and "Sign out everywhere" in page
    laptop_row = db.session.scalar(select(UserSession).where(UserSession.user_agent == "LaptopBrowser/1.0"))
    ended = client.htmx_post(f"/profile/sessions/{laptop_row.id}/end")
    assert ended.status_code == 200 and ended.get_data(as_text=True).strip() == ""  # the row leaves the table
    assert laptop.get("/profile").status_code == 302
    assert client.get("/profile").status_code == 200
    assert session_count(ann) == 1


def test_nobody_ends_another_persons_session(app, client, make_user, login):
    ann, bob = make_user("ann"), make_user("bob")
    login(bob, new_client(app, client))
    login(ann)
    bobs = db.session.scalar(select(UserSession).where(UserSession.user_id == bob.id))
    assert client.post(f"/profile/sessions/{bobs.id}/end").status_code == 404
    assert session_count(bob) == 1


def test_sign_out_everywhere(app, client, make_user, login):
    ann = make_user("ann")
    phone = login(ann, new_client(app, client))
    login(ann)
    response = client.post("/profile/sessions/end-all")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert client.get("/profile").status_code == 302 and phone.get("/profile").status_code == 302
    assert session_count(ann) == 0


def test_password_change_and_admin_actions_end_every_session(app, client, make_user, login):
    ann, root = make_user("ann"), make_user("root", admin=True)
    phone = login(ann, new_client(app, client))
    copied = cookies_of(phone)
    login(ann)
    changed = client.post("/profile/password", data={"current": PASSWORD, "password": "new password 1",
                                                      "confirm": "new password 1"})
    assert changed.status_code == 302
    assert client.get("/profile").status_code == 200 and phone.get("/profile").status_code == 302
    assert not replay(app, client, copied)

    admin = login(root, new_client(app, client))
    ended = admin.htmx_post(f"/admin/users/{ann.id}/end-sessions").get_data(as_text=True)
    assert "1 session ended." in ended and 'id="user-' in ended and "<html" not in ended
    assert client.get("/profile").status_code == 302

    login_again = new_client(app, client)
    login_again.post("/login", data={"login": "ann", "password": "new password 1"})
    assert login_again.get("/profile").status_code == 200
    admin.htmx_post(f"/admin/users/{ann.id}/active", data={"value": "off"})
    assert login_again.get("/profile").status_code == 302 and session_count(ann) == 0


def test_remember_cookie_is_secure_exactly_when_the_session_cookie_is(app, client, make_user):
    make_user("ann")
    for secure in (False, True):
        app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = secure
        c = new_client(app, client)
        response = c.post("/login", data={"login": "ann", "password": PASSWORD, "remember": "y"})
        cookies = {h.split("=", 1)[0]: h for h in response.headers.getlist("Set-Cookie")}
        assert ("Secure" in cookies["session"]) is secure and ("Secure" in cookies["remember_token"]) is secure


def test_config_from_an_https_base_url_marks_both_cookies_secure(monkeypatch):
    from webapp import create_app

    monkeypatch.setenv("SPACEMAIL_BASE_URL", "https://mail.example.org")
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x"})
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["REMEMBER_COOKIE_SECURE"] is True


def test_csrf_token_changes_at_sign_in(app, client, make_user):
    make_user("ann")
    before = client.csrf_token()
    client.post("/login", data={"login": "ann", "password": PASSWORD})
    after = re.search(r'"X-CSRFToken": "([^"]+)"', client.get("/profile").get_data(as_text=True)).group(1)
    assert after != before
    # The token from before signing in no longer works for a signed-in form.
    stale = client.post("/profile", data={"full_name": "Ann", "email": "ann@example.org", "csrf_token": before})
    assert stale.status_code == 400


def test_forty_wrong_passwords_are_refused_and_the_right_one_too_while_it_lasts(app, client, make_user):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 0.01
    make_user("ann")
    statuses = [client.post("/login", data={"login": "ann", "password": f"guess-{i}"}).status_code for i in range(40)]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    refused = client.post("/login", data={"login": "ann", "password": PASSWORD})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 429 and re.search(r"Too many attempts; try again in \d+ (second|minute)s?\.", text)
    assert "<form" in text  # said on the form, which stays usable
    assert client.get("/profile").status_code == 302


def test_guesses_spread_over_addresses_are_still_counted_per_account(app, client, make_user):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 0.01
    make_user("ann")
    statuses = [new_client(app, client).post("/login", data={"login": "ANN", "password": "x"},
                                             environ_base={"REMOTE_ADDR": f"203.0.113.{i}"}).status_code
                for i in range(8)]
    assert statuses.count(429) == 3
    # Another account from a fresh address is not held back by Ann's attacker.
    make_user("bob")
    bob = new_client(app, client).post("/login", data={"login": "bob", "password": PASSWORD},
                                       environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert bob.status_code == 302


def test_one_address_guessing_many_accounts_is_counted_per_address(app, client, make_user):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 0.01
    app.config["SIGNIN_ADDRESS_LIMITS"] = "6 per minute"
    statuses = [client.post("/login", data={"login": f"user{i}", "password": "x"}).status_code for i in range(9)]
    assert statuses == [200] * 6 + [429] * 3


def test_the_window_runs_out_and_the_owner_signs_in(app, client, make_user):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 0.01
    app.config["SIGNIN_ACCOUNT_LIMITS"] = "3 per 2 seconds"
    make_user("ann")
    for _ in range(3):
        client.post("/login", data={"login": "ann", "password": "x"})
    assert client.post("/login", data={"login": "ann", "password": PASSWORD}).status_code == 429
    time.sleep(2.2)
    assert client.post("/login", data={"login": "ann", "password": PASSWORD}).status_code == 302


def test_answers_slow_down_after_a_few_failures(app, client, make_user):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 1.0
    app.config["SIGNIN_ACCOUNT_LIMITS"] = "6 per minute"
    make_user("ann")
    client.get("/login")  # the first answer of a process compiles the page: not what is measured here
    took = []
    for _ in range(5):
        started = time.monotonic()
        client.post("/login", data={"login": "ann", "password": "x"})
        took.append(time.monotonic() - started)
    assert took[0] < 1.0 and took[-1] >= 1.0


def test_password_change_is_throttled(app, client, make_user, login):
    app.config["SIGNIN_SLOW_DOWN_SECONDS"] = 0.01
    login(make_user("ann"))
    answers = [client.post("/profile/password", data={"current": f"guess{i}", "password": "new password 1",
                                                      "confirm": "new password 1"}) for i in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    assert "Too many attempts" in answers[-1].get_data(as_text=True)
    right = client.post("/profile/password", data={"current": PASSWORD, "password": "new password 1",
                                                   "confirm": "new password 1"})
    assert right.status_code == 429  # not even the right one while it lasts


def test_setup_link_guessing_is_throttled(app, client):
    app.config["SIGNIN_ADDRESS_LIMITS"] = "4 per minute"
    statuses = [client.get(f"/setup?token=guess{i}").status_code for i in range(6)]
    assert statuses == [404] * 4 + [429] * 2
    assert "Too many attempts" in client.get("/setup?token=again").get_data(as_text=True)


def test_last_seen_is_noted_and_an_idle_session_ends(app, client, make_user, login):
    from datetime import timedelta

    from webapp.timeutil import utcnow

    ann = make_user("ann")
    login(ann)
    row = db.session.scalar(select(UserSession).where(UserSession.user_id == ann.id))
    row.last_seen_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    assert client.get("/profile").status_code == 200
    db.session.expire_all()
    assert db.session.get(UserSession, row.id).last_seen_at > utcnow() - timedelta(minutes=1)
    row = db.session.get(UserSession, row.id)
    row.last_seen_at = utcnow() - timedelta(days=app.config["SESSION_IDLE_DAYS"], minutes=1)
    db.session.commit()
    assert client.get("/profile").status_code == 302  # idle too long: signed out
    from webapp.auth.sessions import forget_expired

    assert forget_expired() == 1
