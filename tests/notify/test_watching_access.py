"""The Watching list shows only what the reader may view now: losing access hides (and removes) watches."""
from sqlalchemy import select

from tests.notify.test_notifications import client_for, team  # noqa: F401  (team is a fixture)
from webapp.content.models import Page
from webapp.extensions import db
from webapp.notify.models import Watch
from webapp.spaces.models import SpaceRole
from webapp.spaces.services import create_site_space


def watching(c) -> str:
    page = c.get("/profile/notifications").get_data(as_text=True)
    return page[page.index("<h2>Watching</h2>"):]


def test_a_removed_role_takes_the_watches_and_the_titles_with_it(app, team):  # noqa: F811
    space, people = team
    owner, cid = client_for(app, people["owner"]), client_for(app, people["cid"])
    owner.post("/spaces/TEAM/pages/new", data={"title": "Salaries 2027", "body": "x"})
    page = db.session.scalar(select(Page))
    cid.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    cid.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"})
    before = watching(cid)
    assert "Salaries 2027" in before and "Team" in before

    role = db.session.scalar(select(SpaceRole).where(SpaceRole.user_id == people["cid"].id))
    assert owner.post(f"/spaces/TEAM/permissions/{role.id}/remove").status_code == 302
    owner.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Layoffs 2027", "body": "y", "version": 1})
    after = watching(cid)
    assert "Salaries" not in after and "Layoffs" not in after and "TEAM" not in after and "Team" not in after
    assert db.session.scalar(select(Watch).where(Watch.user_id == people["cid"].id)) is None


def test_a_role_lost_some_other_way_is_hidden_all_the_same(app, team):  # noqa: F811
    """A role row deleted without the service (an old database, a script): the list still checks access."""
    space, people = team
    owner, cid = client_for(app, people["owner"]), client_for(app, people["cid"])
    owner.post("/spaces/TEAM/pages/new", data={"title": "Roadmap", "body": "x"})
    page = db.session.scalar(select(Page))
    cid.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"})
    db.session.execute(db.delete(SpaceRole).where(SpaceRole.user_id == people["cid"].id))
    db.session.commit()
    owner.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Roadmap (renamed)", "body": "y", "version": 1})
    assert "Roadmap" not in watching(cid)


def test_closing_a_public_space_hides_it_from_those_without_a_role(app, team, make_user):  # noqa: F811
    space, people = team
    open_space = create_site_space(people["owner"], "OPEN", "Open house")
    open_space.everyone_can_view = True
    db.session.commit()
    eve = make_user("eve")
    client_for(app, eve).htmx_post("/spaces/OPEN/watch", data={"value": "on"})
    client_for(app, people["bob"]).htmx_post("/spaces/OPEN/watch", data={"value": "on"})
    db.session.add(SpaceRole(space_id=open_space.id, user_id=people["bob"].id, role="view"))
    db.session.commit()
    assert "Open house" in watching(client_for(app, eve))
    owner = client_for(app, people["owner"])
    assert owner.post("/spaces/OPEN/settings", data={"name": "Open house", "description": ""}).status_code == 302
    assert "Open house" not in watching(client_for(app, eve))
    assert db.session.scalar(select(Watch).where(Watch.user_id == eve.id)) is None
    assert "Open house" in watching(client_for(app, people["bob"]))  # bob holds a role: his watch stays
