"""Sign-in, first run, profile and password: what a person sees and what the database holds."""
import re

from webapp.settings import SiteSettings
from webapp.auth.models import User
from webapp.auth.services import issue_setup_token
from webapp.spaces.models import Space
from tests.conftest import PASSWORD


def test_first_run_link_creates_the_admin_once(client, db):
    assert client.get("/setup").status_code == 404
    token = issue_setup_token()
    assert client.get("/setup?token=wrong").status_code == 404
    page = client.get(f"/setup?token={token}")
    assert page.status_code == 200 and "Create administrator" in page.get_data(as_text=True)

    response = client.post(f"/setup?token={token}", data={
        "username": "root", "full_name": "Rita Root", "email": "Rita@Example.org",
        "password": "a long enough pw", "confirm": "a long enough pw",
    })
    assert response.status_code == 302
    admin = db.session.query(User).one()
    assert admin.is_admin and admin.email == "rita@example.org"
    assert admin.password_hash.startswith("scrypt:") and "a long enough pw" not in admin.password_hash
    assert db.session.query(Space).filter_by(key="~root", owner_id=admin.id).one()
    assert SiteSettings.get().setup_token_hash is None
    # The link is spent, and no new one is issued once someone can sign in.
    assert client.get(f"/setup?token={token}").status_code == 404
    assert issue_setup_token() is None


def test_setup_form_shows_errors_and_creates_nobody(client, db):
    token = issue_setup_token()
    response = client.post(f"/setup?token={token}", data={
        "username": "Bad Name!", "full_name": "Eve\r\nBcc: x@y", "email": "not-an-email",
        "password": "short", "confirm": "other",
    })
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "lower-case letters" in page and "Line breaks" in page and "email" in page.lower()
    assert "Use 10 to 256 characters." in page and "The passwords differ." in page
    assert db.session.query(User).count() == 0


def test_sign_in_wrong_password_and_disabled_account(client, make_user, db):
    ann = make_user("ann")
    response = client.post("/login", data={"login": "ann", "password": "nope"})
    assert response.status_code == 200 and "Wrong username or password" in response.get_data(as_text=True)
    ann.active = False
    db.session.commit()
    response = client.post("/login", data={"login": "ann@example.org", "password": PASSWORD})
    assert "Wrong username or password" in response.get_data(as_text=True)
    ann.active = True
    db.session.commit()
    response = client.post("/login?next=/profile", data={"login": "ANN@example.org", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/profile"


def test_sign_in_never_redirects_to_another_site(client, make_user):
    make_user("ann")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"):
        client.post("/logout")
        response = client.post(f"/login?next={target}", data={"login": "ann", "password": PASSWORD})
        assert response.headers["Location"] == "/spaces", target


def test_session_cookie_is_httponly_and_lax(client, make_user):
    make_user("ann")
    response = client.post("/login", data={"login": "ann", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_profile_and_password_change_signs_out_other_sessions(app, client, make_user, login, db):
    ann = make_user("ann")
    login(ann)
    other = app.test_client()
    other.__class__ = type(client)
    login(ann, other)

    response = client.post("/profile", data={"full_name": "Ann Other", "email": "ann2@example.org"})
    assert response.status_code == 302
    db.session.refresh(ann)
    assert (ann.full_name, ann.email) == ("Ann Other", "ann@example.org")  # the new address waits for its link

    bad = client.post("/profile/password", data={"current": "wrong", "password": "new password 1", "confirm": "new password 1"})
    assert "The current password is not right." in bad.get_data(as_text=True)
    good = client.post("/profile/password", data={"current": PASSWORD, "password": "new password 1", "confirm": "new password 1"})
    assert good.status_code == 302
    assert client.get("/profile").status_code == 200  # this session stays signed in
    assert other.get("/profile").status_code == 302  # the other one is signed out
    assert client.post("/logout").status_code == 302
    assert client.post("/login", data={"login": "ann", "password": "new password 1"}).status_code == 302


def test_profile_refuses_an_email_someone_else_uses(client, make_user, login, db):
    make_user("bob")
    login(make_user("ann"))
    response = client.post("/profile", data={"full_name": "Ann", "email": "bob@example.org"})
    assert "Another person already uses that email address." in response.get_data(as_text=True)
    assert db.session.query(User).filter_by(username="ann").one().email == "ann@example.org"


def test_security_headers_on_every_page(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    page = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script would break the CSP"
    assert '"allowEval":false' in page and '"includeIndicatorStyles":false' in page


def test_dates_show_in_the_readers_time_zone(client, make_user, login, db):
    from datetime import datetime, timezone

    from webapp.settings import format_local

    ann = make_user("ann")
    login(ann)
    client.post("/profile", data={"full_name": "Ann", "email": "ann@example.org", "time_zone": "Asia/Tokyo"})
    bad = client.post("/profile", data={"full_name": "Ann", "email": "ann@example.org", "time_zone": "Mars/Base"})
    assert "Not a valid choice" in bad.get_data(as_text=True)
    db.session.refresh(ann)
    assert ann.time_zone == "Asia/Tokyo"
    noon_utc = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    from flask_login import login_user

    with client.application.test_request_context():
        login_user(ann)
        assert format_local(noon_utc) == "2026-01-05 21:00"
