"""Watching and notifications end to end: real web requests, a real worker, a real SMTP sink."""
import re
from datetime import timedelta

import pytest

from tests.conftest import PASSWORD
from tests.outgoing.helpers import add_server
from webapp.content.models import Page
from webapp.extensions import db
from webapp.notify.models import ContentEvent, Watch
from webapp.settings import SiteSettings
from webapp.spaces.models import EDIT, VIEW, SpaceRole
from webapp.spaces.services import create_site_space
from webapp.timeutil import utcnow


@pytest.fixture
def team(app, make_user, sinks):
    """TEAM with ann (edit), bob (view), cid (view, about to lose it), dee (edit); mail goes to the plain sink."""
    add_server(sinks, sinks.plain)
    SiteSettings.get().notify_coalesce_minutes = 0
    people = {name: make_user(name, full_name=name.title() + " Example") for name in ("owner", "ann", "bob", "cid",
                                                                                        "dee")}
    space = create_site_space(people["owner"], "TEAM", "Team")
    for name, role in (("ann", EDIT), ("bob", VIEW), ("cid", VIEW), ("dee", EDIT)):
        db.session.add(SpaceRole(space=space, user=people[name], role=role))
    db.session.commit()
    return space, people


def client_for(app, user):
    from tests.conftest import Client

    app.test_client_class = Client
    c = app.test_client()
    assert c.post("/login", data={"login": user.username, "password": PASSWORD}).status_code == 302
    return c


def recipients(sinks) -> list[str]:
    return sorted(r for m in sinks.plain.messages for r in m.rcpt_tos)


def test_the_seed_steps(app, team, run_jobs, sinks):
    space, people = team
    dee, ann, bob, cid = (client_for(app, people[n]) for n in ("dee", "ann", "bob", "cid"))
    response = dee.post("/spaces/TEAM/pages/new", data={"title": "Runbook", "body": "Step one."})
    assert response.status_code == 302
    page = db.session.scalar(db.select(Page))
    run_jobs()
    assert sinks.plain.messages == []  # nobody watches yet but dee, who does not want their own changes
    sinks.plain.recorder.reset()

    assert ann.post("/profile/notifications", data={"notify_own_actions": "y", "mail_format": "html",
                                                    "watch_own_edits": "y"}).status_code == 302
    assert ann.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"}).status_code == 200
    assert bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"}).status_code == 200
    assert cid.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"}).status_code == 200
    db.session.execute(db.delete(SpaceRole).where(SpaceRole.user_id == people["cid"].id))
    db.session.commit()

    response = ann.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Runbook", "body": "Step one.\nStep two.",
                                                                    "version": 1})
    assert response.status_code == 302
    assert db.session.scalar(db.select(db.func.count(ContentEvent.id))) == 2  # the request only recorded it
    run_jobs()
    # dee watches the page she created; cid watched it but can no longer view it.
    assert recipients(sinks) == ["ann@example.org", "bob@example.org", "dee@example.org"]
    by_recipient = {m.rcpt_tos[0]: m.message for m in sinks.plain.messages}
    mail = by_recipient["ann@example.org"]
    assert mail["Subject"] == "[Spacemail] Team › Runbook"
    assert mail["From"].addresses[0].display_name == "Ann Example (Spacemail)"
    assert mail["Reply-To"].addresses[0].addr_spec == "ann@example.org"  # the sink server's policy is "actor"
    text = mail.get_body(("plain",)).get_content()
    assert "Ann Example edited the page \"Runbook\" in Team." in text
    assert "+ Step two." in text
    assert f"http://spacemail.test/spaces/TEAM/pages/{page.id}" in text
    assert "because you watch this page" in text
    assert "because you watch the space Team" in by_recipient["bob@example.org"].get_body(("plain",)).get_content()

    # The actor without Notify On My Actions gets nothing of her own edit.
    sinks.plain.recorder.reset()
    dee.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Runbook", "body": "Step 1.", "version": 2})
    run_jobs()
    assert recipients(sinks) == ["ann@example.org", "bob@example.org"]


def test_headers_thread_list_and_unsubscribe(app, team, run_jobs, sinks, client):
    space, people = team
    ann = client_for(app, people["ann"])
    bob = client_for(app, people["bob"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    ann.post("/spaces/TEAM/pages/new", data={"title": "Plan", "body": "v1"})
    page = db.session.scalar(db.select(Page))
    ann.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Plan", "body": "v2", "version": 1})
    ann.post(f"/spaces/TEAM/pages/{page.id}/comments", data={"body": "Looks **good**"})
    run_jobs()
    mails = [m.message for m in sinks.plain.messages]
    assert len(mails) == 3 and all(m["To"].addresses[0].addr_spec == "bob@example.org" for m in mails)
    assert len({m["Message-ID"] for m in mails}) == 3
    assert {m["In-Reply-To"] for m in mails} == {f"<page-{page.id}.team@spacemail.test>"}
    assert {m["References"] for m in mails} == {f"<page-{page.id}.team@spacemail.test>"}
    assert {m["List-Id"] for m in mails} == {"Team <team.spacemail.test>"}
    assert {m["List-Unsubscribe-Post"] for m in mails} == {"List-Unsubscribe=One-Click"}
    assert "Looks good" in mails[2].get_body(("html",)).get_content().replace("<strong>", "").replace("</strong>", "")
    link = re.fullmatch(r"<(http://spacemail\.test/unwatch/\S+)>", mails[0]["List-Unsubscribe"]).group(1)
    path = link.removeprefix("http://spacemail.test")

    tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    assert client.post(tampered, data={"List-Unsubscribe": "One-Click"}, csrf=False).status_code == 400
    assert db.session.scalar(db.select(db.func.count(Watch.id)).where(Watch.user_id == people["bob"].id)) == 1
    page_text = client.get(path).get_data(as_text=True)  # a link scanner's GET changes nothing
    assert "Stop watching the space Team?" in page_text
    assert db.session.scalar(db.select(db.func.count(Watch.id)).where(Watch.user_id == people["bob"].id)) == 1
    response = client.post(path, data={"List-Unsubscribe": "One-Click"}, csrf=False)  # RFC 8058, no session
    assert response.status_code == 200 and "You no longer watch the space Team" in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(Watch.id)).where(Watch.user_id == people["bob"].id)) == 0


def test_a_forged_host_header_never_reaches_a_mail(app, team, run_jobs, sinks):
    space, people = team
    bob = client_for(app, people["bob"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    ann = client_for(app, people["ann"])
    token = ann.csrf_token()  # first: a new session makes its CSRF token on first use, which changes the cookie
    session = ann.get_cookie("session").value
    forger = app.test_client(use_cookies=False)  # sends the browser's cookie to whatever Host it names
    response = forger.post("/spaces/TEAM/pages/new", data={"title": "Hosts", "body": "x", "csrf_token": token},
                           csrf=False, headers={"Cookie": f"session={session}"},
                        environ_overrides={"HTTP_HOST": "evil.example", "HTTP_X_FORWARDED_HOST": "evil.example"})
    assert response.status_code == 302, response.get_data(as_text=True)
    run_jobs()
    assert len(sinks.plain.messages) == 1
    assert b"evil.example" not in sinks.plain.messages[0].data
    assert b"http://spacemail.test/spaces/TEAM/pages/" in sinks.plain.messages[0].data


def test_sensitive_pages_carry_no_content(app, team, run_jobs, sinks):
    space, people = team
    owner, bob = client_for(app, people["owner"]), client_for(app, people["bob"])
    owner.post("/spaces/TEAM/pages/new", data={"title": "Salaries", "body": "Ann: SECRET-FIRST"})
    page = db.session.scalar(db.select(Page))
    assert owner.htmx_post(f"/spaces/TEAM/pages/{page.id}/sensitive", data={"value": "on"}).status_code == 200
    bob.htmx_post(f"/spaces/TEAM/pages/{page.id}/watch", data={"value": "on"})
    owner.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Salaries", "body": "Ann: SECRET-SECOND",
                                                                    "version": 1})
    owner.post(f"/spaces/TEAM/pages/{page.id}/comments", data={"body": "Bob: SECRET-COMMENT"})
    run_jobs()
    assert len(sinks.plain.messages) == 3  # created, edited, commented: bob watched before the worker ran
    for received in sinks.plain.messages:
        parts = [p.get_content() for p in received.message.walk() if not p.is_multipart()]
        assert len(parts) == 2 and all("Salaries" in p and "marked sensitive" in p for p in parts)
        assert not any("SECRET" in p for p in parts)


def test_edits_within_the_window_become_one_mail(app, team, run_jobs, sinks):
    space, people = team
    SiteSettings.get().notify_coalesce_minutes = 10
    db.session.commit()
    bob, ann = client_for(app, people["bob"]), client_for(app, people["ann"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    SiteSettings.get().notify_coalesce_minutes = 0
    db.session.commit()
    ann.post("/spaces/TEAM/pages/new", data={"title": "Notes", "body": "a"})
    run_jobs()
    SiteSettings.get().notify_coalesce_minutes = 10
    db.session.commit()
    page = db.session.scalar(db.select(Page))
    for version, body in enumerate(["a\nb", "a\nb\nc", "a\nb\nc\nd"], start=1):
        ann.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Notes", "body": body, "version": version})
    run_jobs()
    assert len(sinks.plain.messages) == 1  # only the creation so far: the edits wait for the window
    db.session.execute(db.update(ContentEvent).values(send_after=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    from workers.notify import notify_tick

    notify_tick()
    run_jobs()
    assert len(sinks.plain.messages) == 2
    text = sinks.plain.messages[1].message.get_body(("plain",)).get_content()
    assert "version 1 to 4" in text and "+ d" in text


def test_daily_report_groups_and_skips_empty(app, team, run_jobs, sinks, make_user):
    from webapp.notify.report import send_reports

    space, people = team
    other = create_site_space(people["owner"], "OPS", "Operations")
    db.session.add(SpaceRole(space=other, user=people["bob"], role=VIEW))
    for name in ("bob", "cid"):
        people[name].daily_report = True
    db.session.commit()
    bob = client_for(app, people["bob"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    bob.htmx_post("/spaces/OPS/watch", data={"value": "on"})
    owner = client_for(app, people["owner"])
    owner.post("/spaces/TEAM/pages/new", data={"title": "Alpha", "body": "a"})
    owner.post("/spaces/OPS/pages/new", data={"title": "Beta", "body": "b"})
    owner.post("/spaces/TEAM/pages/new", data={"title": "Secret", "body": "s"})
    secret = db.session.scalar(db.select(Page).where(Page.title == "Secret"))
    secret.sensitive = True
    db.session.commit()
    run_jobs()
    sinks.plain.recorder.reset()
    assert send_reports() == 1  # cid watches nothing: no empty report
    db.session.commit()
    run_jobs()
    (received,) = sinks.plain.messages
    assert received.rcpt_tos == ["bob@example.org"]
    text = received.message.get_body(("plain",)).get_content()
    assert text.index("Operations") < text.index("Beta") < text.index("Team") < text.index("Alpha")
    assert "Secret" not in text


def test_daily_report_goes_once_at_the_chosen_hour(app, team, run_jobs, sinks):
    from zoneinfo import ZoneInfo

    from webapp.notify.report import send_if_due

    space, people = team
    settings = SiteSettings.get()
    settings.time_zone = "Europe/Berlin"
    now_there = utcnow().astimezone(ZoneInfo("Europe/Berlin"))
    settings.daily_report_hour = (now_there.hour + 1) % 24
    people["bob"].daily_report = True
    db.session.commit()
    bob = client_for(app, people["bob"])
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Daily", "body": "x"})
    run_jobs()
    sinks.plain.recorder.reset()
    assert send_if_due() == 0  # not the hour yet
    settings = SiteSettings.get()
    settings.daily_report_hour = now_there.hour
    db.session.commit()
    assert send_if_due() == 1
    assert send_if_due() == 0  # once a day
    run_jobs()
    assert [m.message["Subject"] for m in sinks.plain.messages] == ["[Spacemail] Your daily report"]


def test_blog_watchers_hear_of_posts_and_plain_text_readers_get_no_html(app, team, run_jobs, sinks):
    space, people = team
    bob = client_for(app, people["bob"])
    assert bob.post("/profile/notifications", data={"mail_format": "text", "watch_own_edits": "y"}).status_code == 302
    bob.htmx_post("/spaces/TEAM/blog/watch", data={"value": "on"})
    ann = client_for(app, people["ann"])
    ann.post("/spaces/TEAM/blog/new", data={"title": "We shipped", "body": "Version 2 is out."})
    ann.post("/spaces/TEAM/pages/new", data={"title": "Not a blog post", "body": "x"})
    run_jobs()
    (received,) = sinks.plain.messages
    message = received.message
    assert received.rcpt_tos == ["bob@example.org"] and message.get_content_type() == "text/plain"
    text = message.get_content()
    assert "created the blog post \"We shipped\"" in text and "Version 2 is out." in text
    assert "because you watch the blog of Team" in text


def test_a_watcher_whose_address_is_broken_waits_in_the_error_queue_and_the_rest_get_their_mail(app, team, run_jobs,
                                                                                                 sinks):
    from webapp.auth.models import User
    from webapp.outgoing.models import FAILED, OutboundMail

    space, people = team
    for name in ("bob", "cid"):
        client_for(app, people[name]).htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    db.session.execute(db.update(User).where(User.id == people["bob"].id).values(email="bob at example"))
    db.session.commit()
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Plan", "body": "x"})
    run_jobs()
    assert recipients(sinks) == ["cid@example.org"]
    broken = db.session.scalar(db.select(OutboundMail).where(OutboundMail.recipient == "bob at example"))
    assert broken.state == FAILED and "'bob at example' is not a mail address" in broken.last_error


def test_the_space_name_in_the_reason_is_text_in_the_html_part(app, team, run_jobs, sinks):
    space, people = team
    space.name = 'R&D <img src="https://tracker.example/x.gif">'
    db.session.commit()
    bob = client_for(app, people["bob"])
    assert bob.post("/profile/notifications", data={"mail_format": "html", "watch_own_edits": "y"}).status_code == 302
    bob.htmx_post("/spaces/TEAM/watch", data={"value": "on"})
    client_for(app, people["ann"]).post("/spaces/TEAM/pages/new", data={"title": "Plan", "body": "x"})
    run_jobs()
    (received,) = sinks.plain.messages
    html = received.message.get_body(("html",)).get_content()
    assert "because you watch the space R&amp;D &lt;img" in html and "<img" not in html
    assert "because you watch the space R&D <img" in received.message.get_body(("plain",)).get_content()
