"""Pages and blog posts: Markdown made safe, versions, diffs, stale edits, comments, watch toggles and the list."""
import pytest

from webapp.content.models import Page, PageVersion
from webapp.extensions import db
from webapp.notify.models import Watch
from webapp.spaces.models import VIEW, SpaceRole
from webapp.spaces.services import create_site_space


@pytest.fixture
def space(app, make_user, login):
    owner = make_user("owner", full_name="Olive Owner")
    space = create_site_space(owner, "TEAM", "Team")
    db.session.commit()
    login(owner)
    return space


def new_page(client, title="Guide", body="Hello", section="pages"):
    response = client.post(f"/spaces/TEAM/{section}/new", data={"title": title, "body": body})
    assert response.status_code == 302, response.get_data(as_text=True)
    return db.session.scalar(db.select(Page).order_by(Page.id.desc()))


def test_markdown_is_rendered_and_hostile_html_is_not(client, space):
    body = ("# Title\n\n**bold** [ok](https://example.org) [bad](javascript:alert(1))\n\n<script>alert(1)</script>\n\n"
            "<img src=x onerror=alert(1)>\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    page = new_page(client, body=body)
    html = client.get(f"/spaces/TEAM/pages/{page.id}").get_data(as_text=True)
    assert "<strong>bold</strong>" in html and '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "<table>" in html
    body_html = html.split('class="page-body"')[1].split("</article>")[0]
    assert 'href="javascript' not in body_html  # the link stays text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body_html and "<script" not in body_html
    assert "<img" not in body_html


def test_versions_history_and_diff(client, space):
    page = new_page(client, body="one\ntwo\nthree")
    assert client.post(f"/spaces/TEAM/pages/{page.id}/edit",
                       data={"title": "Guide", "body": "one\n2\nthree", "version": 1}).status_code == 302
    assert [v.version for v in db.session.scalars(db.select(PageVersion))] == [1, 2]
    history = client.get(f"/spaces/TEAM/pages/{page.id}/history").get_data(as_text=True)
    assert "Changes from 1" in history and "Olive Owner" in history
    diff = client.get(f"/spaces/TEAM/pages/{page.id}/diff?from=1&to=2").get_data(as_text=True)
    assert '<span class="diff-del">- two</span>' in diff and '<span class="diff-add">+ 2</span>' in diff
    assert client.get(f"/spaces/TEAM/pages/{page.id}/diff?from=1&to=9").status_code == 404


def test_a_stale_edit_is_refused_and_nothing_is_lost(client, space):
    page = new_page(client, body="base")
    client.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Guide", "body": "first", "version": 1})
    response = client.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Guide", "body": "second",
                                                                       "version": 1})
    assert "Someone saved version 2 while you were editing" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Page, page.id).body == "first"


def test_bad_input_is_explained(client, space):
    response = client.post("/spaces/TEAM/pages/new", data={"title": "", "body": "x"})
    assert "Give the page a title." in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(Page.id))) == 0
    page = new_page(client)
    response = client.htmx_post(f"/spaces/TEAM/pages/{page.id}/comments", data={"body": "   "})
    assert "Write something first." in response.get_data(as_text=True)


def test_comments_update_in_place(client, space):
    page = new_page(client)
    partial = client.htmx_post(f"/spaces/TEAM/pages/{page.id}/comments", data={"body": "Nice *work*"})
    text = partial.get_data(as_text=True)
    assert text.lstrip().startswith('<div id="comment-list">') and "<em>work</em>" in text and "<html" not in text


def test_blog_lists_posts_newest_first(client, space):
    new_page(client, "First post", section="blog")
    new_page(client, "Second post", section="blog")
    text = client.get("/spaces/TEAM/blog").get_data(as_text=True).split('class="page-list"')[1]
    assert text.index("Second post") < text.index("First post")
    assert "Second post" not in client.get("/spaces/TEAM/pages").get_data(as_text=True)


def test_watch_toggle_updates_in_place_with_the_count(client, space, make_user, login, app):
    page = new_page(client)  # the creator watches it (Watch pages I create or edit is on by default)
    viewer = make_user("vic")
    db.session.add(SpaceRole(space=space, user=viewer, role=VIEW))
    db.session.commit()
    from tests.notify.test_notifications import client_for

    vic = client_for(app, viewer)
    partial = vic.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"}).get_data(as_text=True)
    assert 'aria-checked="true"' in partial and "2 watching" in partial and "<html" not in partial
    again = vic.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"}).get_data(as_text=True)
    assert "2 watching" in again  # a double click does not add a second watch
    off = vic.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "off"}).get_data(as_text=True)
    assert 'aria-checked="false"' in off and "1 watching" in off


def test_watching_list_unwatches_in_one_click(client, space):
    page = new_page(client)
    listing = client.get("/profile/notifications").get_data(as_text=True)
    watch = db.session.scalar(db.select(Watch))
    assert "Guide" in listing and f"watch-row-{watch.id}" in listing
    response = client.htmx_post(f"/profile/watches/{watch.id}/remove")
    assert response.status_code == 200 and response.get_data(as_text=True).strip() == ""
    assert db.session.scalar(db.select(db.func.count(Watch.id))) == 0
    assert page.id


def test_preferences_can_turn_off_watching_own_edits(client, space):
    assert client.post("/profile/notifications", data={"mail_format": "text"}).status_code == 302
    new_page(client)
    assert db.session.scalar(db.select(db.func.count(Watch.id))) == 0


def test_preferences_refuse_an_unknown_mail_format(client, space):
    page = client.post("/profile/notifications", data={"mail_format": "pdf"}).get_data(as_text=True)
    assert "Not a valid choice" in page
    from webapp.auth.models import User

    db.session.expire_all()
    assert db.session.scalar(db.select(User.mail_format).where(User.username == "owner")) == "html"
