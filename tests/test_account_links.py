"""Invitations, "Forgot password?" and a confirmed change of address: the links are read from the real SMTP sink."""
import re

import pytest
from sqlalchemy import select

from tests.conftest import PASSWORD
from tests.outgoing.helpers import add_server
from webapp.auth.models import AccountLink, User, UserSession
from webapp.extensions import db
from webapp.outgoing.models import OutboundMail
from webapp.spaces.models import SpaceRole
from webapp.spaces.services import create_site_space

LINK = re.compile(r"http://spacemail\.test(/(?:invite|login/reset|profile/email)\?token=[A-Za-z0-9_-]{40,})")
NEW_PASSWORD = "a new long passphrase"


@pytest.fixture
def mail(app, sinks):
    add_server(sinks, sinks.plain)
    return sinks.plain


def links_in(sink, to: str) -> list[str]:
    found = []
    for received in sink.messages:
        if to in received.rcpt_tos:
            found += LINK.findall(received.message.get_body(("plain",)).get_content())
    return found


def anonymous(app, client):
    other = app.test_client()
    other.__class__ = type(client)
    return other


def test_invite_accept_and_sign_in(app, client, make_user, login, mail, run_jobs):
    admin = login(make_user("root", admin=True))
    page = admin.post("/admin/invitations", data={"email": "New.Person@Example.org", "can_create_spaces": "y"},
                      follow_redirects=True).get_data(as_text=True)
    assert "new.person@example.org" in page.lower() and "Pending invitations" in page
    stored = db.session.scalars(select(OutboundMail)).one()
    assert "/invite" not in stored.body_text  # the link is a secret: the queue holds it encrypted
    run_jobs()
    [path] = links_in(mail, "new.person@example.org")
    assert mail.messages[0].message["Subject"].endswith("You are invited to Spacemail")

    guest = anonymous(app, client)
    opened = guest.get(path)
    assert opened.status_code == 302 and opened.headers["Location"] == "/invite"  # the secret leaves the URL
    form = guest.get("/invite").get_data(as_text=True)
    assert 'value="new.person"' in form and "At least 10 characters" in form  # suggested name, rule shown first
    short = guest.post("/invite", data={"username": "newbie", "full_name": "New Person", "password": "short",
                                        "confirm": "short"})
    assert "Use 10 to 256 characters." in short.get_data(as_text=True)
    done = guest.post("/invite", data={"username": "newbie", "full_name": "New Person", "password": NEW_PASSWORD,
                                       "confirm": NEW_PASSWORD})
    assert done.status_code == 302
    assert guest.get("/profile").status_code == 200
    user = db.session.scalar(select(User).where(User.username == "newbie"))
    assert user.email == "new.person@example.org" and user.can_create_spaces and not user.is_admin
    # Used once: the same link again, in another browser, is refused and says why.
    again = anonymous(app, client).get(path)
    assert again.status_code == 410 and "send it again" in again.get_data(as_text=True)
    fresh = anonymous(app, client)
    assert fresh.post("/login", data={"login": "new.person@example.org", "password": NEW_PASSWORD}).status_code == 302


def test_resend_ends_the_old_link_and_revoke_ends_both(app, client, make_user, login, mail, run_jobs):
    admin = login(make_user("root", admin=True))
    admin.post("/admin/invitations", data={"email": "late@example.org"})
    run_jobs()
    invitation = db.session.scalars(select(AccountLink)).one()
    admin.post(f"/admin/invitations/{invitation.id}/resend")
    run_jobs()
    first, second = links_in(mail, "late@example.org")
    assert anonymous(app, client).get(first).status_code == 410
    assert anonymous(app, client).get(second).status_code == 302
    admin.post(f"/admin/invitations/{invitation.id}/revoke")
    assert anonymous(app, client).get(second).status_code == 410
    page = admin.get("/admin/users", follow_redirects=True).get_data(as_text=True)
    assert "withdrawn" in page and f'id="invitation-{invitation.id}"' not in page and "No invitation is waiting" in page


def test_inviting_an_existing_address_is_refused(app, client, make_user, login, mail):
    make_user("ann")
    admin = login(make_user("root", admin=True))
    page = admin.post("/admin/invitations", data={"email": "ann@example.org"}).get_data(as_text=True)
    assert "already has an account" in page
    assert db.session.scalars(select(AccountLink)).all() == []


def test_space_admin_invites_to_their_space_when_the_site_allows(app, client, make_user, login, mail, run_jobs):
    from webapp.settings import SiteSettings

    ann = make_user("ann")
    team = create_site_space(ann, "TEAM", "Team")
    db.session.commit()
    c = login(ann)
    assert "Invite by email" not in c.get("/spaces/TEAM/permissions").get_data(as_text=True)
    invitation = {"invite-email": "guest@example.org", "invite-role": "edit"}
    refused = c.post("/spaces/TEAM/permissions/invite", data=invitation)
    assert refused.status_code == 403
    SiteSettings.get().space_admins_invite = True
    db.session.commit()
    page = c.post("/spaces/TEAM/permissions/invite", data=invitation, follow_redirects=True).get_data(as_text=True)
    assert "guest@example.org" in page and "Invite by email" in page
    run_jobs()
    [path] = links_in(mail, "guest@example.org")
    assert "the space \"Team\"" in mail.messages[0].message.get_body(("plain",)).get_content()
    guest = anonymous(app, client)
    guest.get(path)
    landed = guest.post("/invite", data={"username": "guest", "full_name": "Guest", "password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD})
    assert landed.headers["Location"] == "/spaces/TEAM"
    role = db.session.scalar(select(SpaceRole).where(SpaceRole.space_id == team.id,
                                                     SpaceRole.user_id == User.id, User.username == "guest"))
    assert role.role == "edit"


def sessions_of(user) -> int:
    db.session.expire_all()
    return len(db.session.scalars(select(UserSession).where(UserSession.user_id == user.id)).all())


def test_forgot_password_resets_and_ends_every_session(app, client, make_user, login, mail, run_jobs):
    ann = make_user("ann")
    phone = login(ann, anonymous(app, client))
    assert sessions_of(ann) == 1
    guest = anonymous(app, client)
    known = guest.post("/login/forgot", data={"login": "ann"}).get_data(as_text=True)
    unknown = guest.post("/login/forgot", data={"login": "nobody@example.org"}).get_data(as_text=True)
    def answer(page):  # the page's own text: what was typed left out (the CSRF token differs between requests)
        return re.sub(r"<strong>[^<]*</strong>", "", page.split("<main", 1)[1].split("</main>", 1)[0])

    assert answer(known) == answer(unknown)
    run_jobs()
    assert [r for m in mail.messages for r in m.rcpt_tos] == ["ann@example.org"]
    [path] = links_in(mail, "ann@example.org")
    assert guest.get(path).status_code == 302
    assert guest.post("/login/reset", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code == 302
    assert phone.get("/profile").status_code == 302  # the other session is over
    assert guest.get("/profile").status_code == 200  # the one that reset it is signed in
    assert sessions_of(ann) == 1
    assert anonymous(app, client).post("/login", data={"login": "ann", "password": PASSWORD}).status_code == 200
    assert anonymous(app, client).get(path).status_code == 410  # spent


def test_forgot_password_is_throttled(app, client, make_user, mail):
    make_user("ann")
    statuses = [client.post("/login/forgot", data={"login": "ann"}).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    assert db.session.query(OutboundMail).count() == 5


def test_a_new_reset_link_ends_the_older_one(app, client, make_user, mail, run_jobs):
    make_user("ann")
    client.post("/login/forgot", data={"login": "ann"})
    client.post("/login/forgot", data={"login": "ann"})
    run_jobs()
    older, newer = links_in(mail, "ann@example.org")
    assert anonymous(app, client).get(older).status_code == 410
    assert anonymous(app, client).get(newer).status_code == 302


def test_own_email_change_waits_for_the_link(app, client, make_user, login, mail, run_jobs):
    ann = make_user("ann")
    c = login(ann)
    page = c.post("/profile", data={"full_name": "Ann", "email": "ann@new.example", "time_zone": ""},
                  follow_redirects=True).get_data(as_text=True)
    assert "We sent a link to" in page and "ann@new.example" in page
    db.session.expire_all()
    assert db.session.get(User, ann.id).email == "ann@example.org"  # not yet
    run_jobs()
    [path] = links_in(mail, "ann@new.example")
    assert c.get(path).status_code == 302
    assert "ann@example.org" in c.get("/profile/email").get_data(as_text=True)
    assert c.post("/profile/email").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, ann.id).email == "ann@new.example"
    run_jobs()
    told = [m for m in mail.messages if "ann@example.org" in m.rcpt_tos]
    assert len(told) == 1 and "ann@new.example" in told[0].message.get_body(("plain",)).get_content()


def test_admin_edits_a_person_and_sends_a_reset_link(app, client, make_user, login, mail, run_jobs):
    bob = make_user("bob")
    make_user("cid")
    admin = login(make_user("root", admin=True))
    taken = admin.post(f"/admin/users/{bob.id}/edit", data={"username": "cid", "full_name": "Bob B",
                                                            "email": "bob@example.org"})
    assert "That username is taken." in taken.get_data(as_text=True)
    saved = admin.post(f"/admin/users/{bob.id}/edit", data={"username": "robert", "full_name": "Robert B",
                                                            "email": "robert@example.org"})
    assert saved.status_code == 302
    db.session.expire_all()
    bob = db.session.get(User, bob.id)
    assert (bob.username, bob.full_name, bob.email) == ("robert", "Robert B", "robert@example.org")
    admin.post(f"/admin/users/{bob.id}/send-reset")
    run_jobs()
    [path] = links_in(mail, "robert@example.org")
    text = mail.messages[0].message.get_body(("plain",)).get_content()
    assert "A system administrator" in text and "72 hours" in text


def test_bad_input_gets_a_message_and_changes_nothing(app, client, make_user, login, mail, run_jobs):
    from webapp.settings import SiteSettings

    make_user("taken")
    root = make_user("root", admin=True)
    admin = login(root)
    bad_address = admin.post("/admin/invitations", data={"email": "not an address"}).get_data(as_text=True)
    assert "Invite people" in bad_address and "field-error" in bad_address
    SiteSettings.get().space_admins_invite = True
    create_site_space(root, "TEAM", "Team")
    db.session.commit()
    space_bad = admin.post("/spaces/TEAM/permissions/invite", data={"invite-email": "x@", "invite-role": "owner"})
    assert space_bad.status_code == 200 and "field-error" in space_bad.get_data(as_text=True)
    assert db.session.scalars(select(AccountLink)).all() == [] and db.session.query(OutboundMail).count() == 0
    assert "field-error" in client.post("/login/forgot", data={"login": ""}).get_data(as_text=True)
    assert db.session.query(OutboundMail).count() == 0
    bob = make_user("bob")
    edited = admin.post(f"/admin/users/{bob.id}/edit", data={"username": "Bad Name!", "full_name": "B\x07",
                                                             "email": "nope"}).get_data(as_text=True)
    assert edited.count("field-error") >= 3
    db.session.expire_all()
    assert (db.session.get(User, bob.id).username, db.session.get(User, bob.id).email) == ("bob", "bob@example.org")

    admin.post("/admin/invitations", data={"email": "new@example.org"})
    client.post("/login/forgot", data={"login": "bob"})
    run_jobs()
    guest = anonymous(app, client)
    guest.get(links_in(mail, "new@example.org")[0])
    taken = guest.post("/invite", data={"username": "taken", "full_name": "New", "password": NEW_PASSWORD,
                                        "confirm": NEW_PASSWORD})
    assert "That username is taken." in taken.get_data(as_text=True)
    assert db.session.scalars(select(AccountLink).where(AccountLink.kind == "invite")).one().used_at is None
    resetter = anonymous(app, client)
    resetter.get(links_in(mail, "bob@example.org")[0])
    mismatch = resetter.post("/login/reset", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"})
    assert "The passwords differ." in mismatch.get_data(as_text=True)
    assert anonymous(app, client).post("/login", data={"login": "bob", "password": PASSWORD}).status_code == 302
