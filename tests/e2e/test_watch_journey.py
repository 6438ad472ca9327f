"""Bob watches a page, Ann edits it, Bob reads the notification (its HTML part in the browser) and follows it back."""
import time

from playwright.sync_api import expect

from tests.conftest import PASSWORD, ROOT
from tests.e2e.test_foundation_journey import htmx_settled, sign_in, sign_out
from tests.outgoing.helpers import add_server
from webapp.content.services import create_page
from webapp.extensions import db
from webapp.notify.models import ContentEvent
from webapp.settings import SiteSettings
from webapp.spaces.models import EDIT, VIEW, SpaceRole
from webapp.spaces.services import create_site_space

SCREENSHOTS = ROOT / "docs" / "screenshots"


def wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        time.sleep(0.2)
        db.session.expire_all()


def test_watch_edit_read_the_mail_follow_the_link(app, live_server, page, console_errors, make_user, sinks,
                                                  worker_process):
    add_server(sinks, sinks.starttls)
    settings = SiteSettings.get()
    settings.base_url, settings.notify_coalesce_minutes = live_server, 0
    owner, ann, bob = (make_user(n, full_name=f) for n, f in (("olive", "Olive Owner"), ("ann", "Ann Author"),
                                                               ("bob", "Bob Reader")))
    space = create_site_space(owner, "TEAM", "Team")
    db.session.add_all([SpaceRole(space=space, user=ann, role=EDIT), SpaceRole(space=space, user=bob, role=VIEW)])
    runbook = create_page(space, ann, "Release runbook", "1. Tag the release\n2. Build")
    db.session.commit()
    wait_until(lambda: db.session.scalar(db.select(ContentEvent.fanned_out_at)) is not None)  # nobody watched yet

    sign_in(page, live_server, "bob", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM")
    page.get_by_role("link", name="Pages").click()
    page.get_by_role("link", name="Release runbook").click()
    expect(page.locator(".watchers")).to_have_text("1 watching")
    page.get_by_role("switch", name="Watch this page").click()
    expect(page.get_by_role("switch", name="Watch this page")).to_have_text("Watching")
    expect(page.locator(".watchers")).to_have_text("2 watching")
    htmx_settled(page)
    sign_out(page)

    sign_in(page, live_server, "ann", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM/pages/{runbook.id}")
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Content (Markdown)").fill("1. Tag the release\n2. Build\n3. Announce it on the blog")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved version 2.")).to_be_visible()
    sign_out(page)

    wait_until(lambda: sinks.starttls.messages)
    (received,) = sinks.starttls.messages
    assert received.rcpt_tos == ["bob@example.org"]
    html = received.message.get_body(("html",)).get_content()
    page.wait_for_load_state("networkidle")
    page.goto("about:blank")  # like a mail client, not under the app's CSP
    page.set_content(html)
    expect(page.get_by_text("Ann Author edited the page Release runbook in Team.")).to_be_visible()
    expect(page.get_by_text("+ 3. Announce it on the blog")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "notification-mail.png"), full_page=True)
    page.get_by_role("link", name="Open the page").click()

    page.get_by_label("Username or email").fill("bob")  # the link asks the reader to sign in first
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Release runbook")).to_be_visible()
    expect(page.get_by_role("listitem").filter(has_text="Announce it on the blog")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "page-after-notification.png"), full_page=True)
    assert console_errors == []
