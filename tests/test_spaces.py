"""Spaces: directory, creation, settings and the htmx permissions page."""
from sqlalchemy import select

from webapp.spaces.models import Space, SpaceRole
from webapp.spaces.services import create_site_space


def _team(db, admin):
    space = create_site_space(admin, "TEAM", "Team", "Where the team works")
    db.session.commit()
    return space


def test_every_user_gets_a_personal_space_that_holds_no_mail_archive(client, make_user, login):
    ann = make_user("ann", full_name="Ann Example")
    login(ann)
    page = client.get("/spaces/~ann").get_data(as_text=True)
    assert "Ann Example" in page and "cannot hold a mail archive" in page
    assert "~ann" in client.get("/spaces").get_data(as_text=True)


def test_create_space_with_bad_and_taken_keys(client, make_user, login, db):
    login(make_user("ann", can_create_spaces=True))
    bad = client.post("/spaces/new", data={"name": "Ops", "key": "1 bad"})
    assert "starting with a letter" in bad.get_data(as_text=True)
    good = client.post("/spaces/new", data={"name": "Ops", "key": "ops", "description": "Runbooks"})
    assert good.status_code == 302 and good.headers["Location"] == "/spaces/OPS"
    taken = client.post("/spaces/new", data={"name": "Ops again", "key": "Ops"})
    assert "The space key OPS is taken." in taken.get_data(as_text=True)
    assert db.session.scalars(select(Space.name).where(Space.kind == "site")).all() == ["Ops"]
    page = client.get("/spaces/OPS").get_data(as_text=True)
    assert "Runbooks" in page and "Space admin" in page


def test_directory_lists_only_spaces_you_can_view(client, make_user, login, db):
    ann, bob = make_user("ann"), make_user("bob")
    _team(db, ann)
    secret = create_site_space(ann, "SECRET", "Secret plans")
    db.session.commit()
    login(bob)
    page = client.get("/spaces").get_data(as_text=True)
    assert "Team" not in page and "Secret plans" not in page and "~ann" not in page
    team = db.session.scalar(select(Space).where(Space.key == "TEAM"))
    team.everyone_can_view = True
    db.session.commit()
    page = client.get("/spaces").get_data(as_text=True)
    assert "Team" in page and "Secret plans" not in page
    assert client.get(f"/spaces/{secret.key}").status_code == 403


def test_space_settings_form(client, make_user, login, db):
    ann = make_user("ann")
    _team(db, ann)
    login(ann)
    bad = client.post("/spaces/TEAM/settings", data={"name": ""})
    assert bad.status_code == 200 and "This field is required." in bad.get_data(as_text=True)
    client.post("/spaces/TEAM/settings", data={"name": "Team A", "description": "", "everyone_can_view": "y"})
    db.session.expire_all()
    team = db.session.scalar(select(Space).where(Space.key == "TEAM"))
    assert team.name == "Team A" and team.everyone_can_view


def test_permissions_page_adds_changes_and_removes_in_place(client, make_user, login, db):
    ann, bob = make_user("ann"), make_user("bob", full_name="Bob Builder")
    _team(db, ann)
    login(ann)

    full = client.get("/spaces/TEAM/permissions")
    assert "<html" in full.get_data(as_text=True) and "HX-Request" in full.headers["Vary"]
    fragment = client.htmx_get("/spaces/TEAM/permissions")
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<section id="permissions"')

    unknown = client.htmx_post("/spaces/TEAM/permissions", data={"person": "nobody", "role": "view"})
    assert "Nobody has that username or email." in unknown.get_data(as_text=True)
    added = client.htmx_post("/spaces/TEAM/permissions", data={"person": "bob@example.org", "role": "view"})
    body = added.get_data(as_text=True)
    assert "<html" not in body and "Bob Builder" in body
    role = db.session.scalar(select(SpaceRole).where(SpaceRole.user_id == bob.id))
    assert role.role == "view"

    changed = client.htmx_post(f"/spaces/TEAM/permissions/{role.id}", data={"role": "edit"})
    body = changed.get_data(as_text=True)
    assert body.lstrip().startswith(f'<tr id="role-{role.id}"') and 'value="edit" selected' in body
    db.session.refresh(role)
    assert role.role == "edit"

    removed = client.htmx_post(f"/spaces/TEAM/permissions/{role.id}/remove")
    assert removed.status_code == 200 and removed.get_data(as_text=True).strip() == ""
    assert db.session.scalar(select(SpaceRole).where(SpaceRole.user_id == bob.id)) is None


def test_permissions_without_javascript_redirect_with_a_message(client, make_user, login, db):
    ann, bob = make_user("ann"), make_user("bob", full_name="Bob Builder")
    _team(db, ann)
    login(ann)
    response = client.post("/spaces/TEAM/permissions", data={"person": "bob", "role": "admin"}, follow_redirects=True)
    assert "Bob Builder now has the Space admin role." in response.get_data(as_text=True)


def test_the_last_space_admin_cannot_leave(client, make_user, login, db):
    ann = make_user("ann")
    _team(db, ann)
    login(ann)
    own = db.session.scalar(select(SpaceRole).where(SpaceRole.user_id == ann.id))
    demoted = client.htmx_post(f"/spaces/TEAM/permissions/{own.id}", data={"role": "view"})
    assert "at least one space admin" in demoted.get_data(as_text=True)
    removed = client.htmx_post(f"/spaces/TEAM/permissions/{own.id}/remove")
    assert "at least one space admin" in removed.get_data(as_text=True)
    db.session.refresh(own)
    assert own.role == "admin"


def test_bad_role_value_is_refused(client, make_user, login, db):
    ann, bob = make_user("ann"), make_user("bob")
    _team(db, ann)
    login(ann)
    response = client.htmx_post("/spaces/TEAM/permissions", data={"person": "bob", "role": "owner"})
    assert "Not a valid choice" in response.get_data(as_text=True)
    assert db.session.scalar(select(SpaceRole).where(SpaceRole.user_id == bob.id)) is None


def test_htmx_request_without_session_is_sent_to_sign_in(client):
    response = client.htmx_get("/spaces/TEAM/permissions")
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/login")


def test_error_pages_are_htmx_aware(client, make_user, login):
    login(make_user("ann"))
    page = client.get("/spaces/NOPE")
    assert page.status_code == 404 and "<html" in page.get_data(as_text=True)
    fragment = client.htmx_get("/spaces/NOPE")
    assert fragment.status_code == 404 and fragment.headers["HX-Retarget"] == "#flash"
    assert "<html" not in fragment.get_data(as_text=True) and "Not found" in fragment.get_data(as_text=True)
    forbidden = client.htmx_get("/admin/users")
    assert forbidden.status_code == 403 and "Not allowed" in forbidden.get_data(as_text=True)
