"""System administration: users, apps, general settings."""
from sqlalchemy import select

from webapp.auth.models import User
from webapp.settings import SiteSettings, base_url
from tests.conftest import PASSWORD


def test_admin_creates_a_user_who_can_sign_in(client, make_user, login, db, app):
    login(make_user("root", admin=True))
    bad = client.post("/admin/users/new", data={"username": "x", "full_name": "", "email": "no",
                                                "password": "1", "confirm": "2"})
    assert bad.status_code == 200 and "This field is required." in bad.get_data(as_text=True)
    assert db.session.scalar(select(User).where(User.username == "x")) is None
    ok = client.post("/admin/users/new", data={"username": "cleo", "full_name": "Cleo", "email": "cleo@example.org",
                                               "password": PASSWORD, "confirm": PASSWORD, "can_create_spaces": "y"})
    assert ok.status_code == 302
    taken = client.post("/admin/users/new", data={"username": "cleo", "full_name": "C", "email": "c2@example.org",
                                                  "password": PASSWORD, "confirm": PASSWORD})
    assert "That username is taken." in taken.get_data(as_text=True)
    cleo = db.session.scalar(select(User).where(User.username == "cleo"))
    assert cleo.can_create_spaces and not cleo.is_admin
    other = app.test_client()
    assert other.post("/login", data={"login": "cleo", "password": PASSWORD}).status_code == 302


def test_disable_signs_the_person_out_and_promote_in_place(app, client, make_user, login, db):
    root, bob = make_user("root", admin=True), make_user("bob")
    bob_client = login(bob, app.test_client())
    login(root)
    row = client.htmx_post(f"/admin/users/{bob.id}/active", data={"value": "off"})
    body = row.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith(f'<tr id="user-{bob.id}"') and "Disabled" in body
    assert bob_client.get("/spaces").status_code == 302  # signed out at once
    again = client.htmx_post(f"/admin/users/{bob.id}/active", data={"value": "off"})  # a double click
    assert "Disabled" in again.get_data(as_text=True)
    client.htmx_post(f"/admin/users/{bob.id}/admin", data={"value": "on"})
    db.session.refresh(bob)
    assert bob.is_admin and not bob.active


def test_the_last_admin_cannot_disable_or_demote_themselves(client, make_user, login, db):
    root = make_user("root", admin=True)
    login(root)
    response = client.htmx_post(f"/admin/users/{root.id}/active", data={"value": "off"})
    assert "You cannot disable your own account." in response.get_data(as_text=True)
    response = client.htmx_post(f"/admin/users/{root.id}/admin", data={"value": "off"})
    assert "ask another administrator" in response.get_data(as_text=True)
    db.session.refresh(root)
    assert root.active and root.is_admin


def test_mail_archiving_app_switch(client, make_user, login, db):
    login(make_user("root", admin=True))
    assert "Mail archiving" in client.get("/admin/apps").get_data(as_text=True)
    fragment = client.htmx_post("/admin/apps/mail-archiving", data={"value": "off"})
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and 'id="app-mail-archiving"' in body and 'aria-checked="false"' in body
    db.session.expire_all()
    assert SiteSettings.get().mail_archiving_enabled is False
    plain = client.post("/admin/apps/mail-archiving", data={"value": "on"})
    assert plain.status_code == 303 and plain.headers["Location"].endswith("/admin/apps")
    db.session.expire_all()
    assert SiteSettings.get().mail_archiving_enabled is True


def test_general_settings_form(client, make_user, login, db):
    login(make_user("root", admin=True))
    bad = client.post("/admin/settings", data={"site_title": "Docs\r\nX", "base_url": "ftp://x", "time_zone": "Mars/Base",
                                               "notify_coalesce_minutes": "-1", "daily_report_hour": "25"})
    page = bad.get_data(as_text=True)
    assert "Line breaks" in page and "Start the base URL with https://" in page and "Not a valid choice" in page
    assert "Choose 0 to 1440." in page
    db.session.expire_all()
    assert SiteSettings.get().site_title == "Spacemail"
    assert base_url() == "http://spacemail.test"  # from SPACEMAIL_BASE_URL until an admin sets one

    client.post("/admin/settings", data={"site_title": "Acme Mail", "base_url": "https://mail.acme.test/",
                                         "time_zone": "Europe/Berlin", "notify_coalesce_minutes": "0",
                                         "daily_report_hour": "7"})
    db.session.expire_all()
    settings = SiteSettings.get()
    assert (settings.site_title, settings.time_zone) == ("Acme Mail", "Europe/Berlin")
    assert (settings.notify_coalesce_minutes, settings.daily_report_hour) == (0, 7)
    assert base_url() == "https://mail.acme.test"
    assert "<title>Users · Acme Mail</title>" in client.get("/admin/users").get_data(as_text=True)


def test_mail_archiving_settings_form(client, make_user, login, db):
    login(make_user("root", admin=True))
    bad = client.post("/admin/mail-archiving", data={"mail_host_allowlist": "10.0.0.0/8\nnot a host!",
                                                     "fetch_interval_minutes": "2"})
    page = bad.get_data(as_text=True)
    assert "is neither a network nor a host name" in page and "Choose 5 to 1440 minutes." in page
    db.session.expire_all()
    assert SiteSettings.get().mail_host_allowlist == "" and SiteSettings.get().fetch_interval_minutes == 30
    client.post("/admin/mail-archiving", data={"mail_host_allowlist": " 10.0.0.0/8 \n\nmail.lan  # the LAN\n",
                                               "fetch_interval_minutes": "15"})
    db.session.expire_all()
    settings = SiteSettings.get()
    assert settings.mail_host_allowlist == "10.0.0.0/8\nmail.lan  # the LAN" and settings.fetch_interval_minutes == 15
