"""axe-core (4.10.3 from the npm registry, vendored in tests/e2e/vendor with its MPL-2.0 licence) on every page
type, signed in and not: no serious or critical WCAG 2 A/AA violation. The pages' strict CSP forbids the inline
script axe needs, so this browser context alone bypasses it (the other journeys keep it and assert no CSP error)."""
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in
from webapp.archive import ingest
from webapp.archive.models import Message
from tests.archive.helpers import team_inbox
from webapp.auth.models import AccountLink
from webapp.content.services import create_page
from webapp.extensions import db
from webapp.outgoing.servers import ServerData, create_server
from webapp.spaces.services import create_site_space
from webapp.timeutil import utcnow

pytestmark = pytest.mark.one_engine
AXE = Path(__file__).parent / "vendor" / "axe-4.10.3.min.js"
RUN = """async () => {
  const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
  return {passes: result.passes.length, violations: result.violations
    .filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => v.id + ": " + v.help + " -> " + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(" | "))};
}"""


def _world():
    from webapp.auth.services import create_user

    root = create_user("root", "root@example.org", "Rita Root", PASSWORD, is_admin=True)
    space = create_site_space(root, "TEAM", "Team")
    page = create_page(space, root, "Runbook", "# Runbook\n\nSteps *here*.")
    account = team_inbox(space)
    text_id, _ = ingest.store(space.id, None, b"From: Ann <ann@example.org>\r\nSubject: Plan\r\nMessage-ID: <a@x>\r\n"
                                               b"Content-Type: text/plain\r\n\r\nHello\r\n> quoted\r\n")
    html_id, _ = ingest.store(space.id, None, b"From: Bob <bob@example.org>\r\nSubject: Re: Plan\r\n"
                                               b"Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nContent-Type: text/html"
                                               b"\r\n\r\n<p>Yes</p><blockquote>Hello</blockquote>\r\n")
    server = create_server(ServerData("Relay", "site@example.org", "", "", "smtp.example.org", 587, "starttls", "",
                                      "", 30, "none", ""))
    for kind, user_id in (("invite", None), ("reset", root.id)):  # links whose secret the test knows
        db.session.add(AccountLink(kind=kind, token_hash=hashlib.sha256(f"{kind}-secret-{'x' * 30}".encode())
                                   .hexdigest(), email="root@example.org" if user_id else "new@example.org",
                                   user_id=user_id, expires_at=utcnow() + timedelta(hours=1)))
    db.session.commit()
    thread_id = db.session.get(Message, text_id).thread_id
    return {"page": page.id, "account": account.id, "text": text_id, "html": html_id, "thread": thread_id,
            "server": server.id}


def test_no_serious_or_critical_violations_on_any_page_type(app, live_server, browser):
    ids = _world()
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    found = {}

    def check(path):
        response = page.goto(live_server + path)
        wanted = {"/spaces/NOPE": 404, "/invite?token=used-up": 410}.get(path, 200)
        assert response.status == wanted, (path, response.status, page.url)
        assert "/login" not in page.url or path.startswith("/login"), path  # really on the page, signed in
        page.add_script_tag(path=str(AXE))
        result = page.evaluate(RUN)
        assert result["passes"] > 5, path  # axe ran and checked things
        if result["violations"]:
            found[path] = result["violations"]

    secret = "secret-" + "x" * 30
    page.goto(live_server + "/login")
    for _ in range(3):  # focus is visible on whatever the keyboard reaches: links, fields, buttons
        page.keyboard.press("Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none"), page.evaluate("document.activeElement.outerHTML")
    for path in ("/login", "/login/forgot", f"/invite?token=invite-{secret}", f"/login/reset?token=reset-{secret}"):
        check(path)
    check("/invite?token=used-up")
    sign_in(page, live_server, "root", PASSWORD)
    for path in ("/spaces", "/spaces/new", "/spaces/TEAM", "/spaces/TEAM/settings", "/spaces/TEAM/permissions",
                 "/spaces/TEAM/pages", "/spaces/TEAM/blog", f"/spaces/TEAM/pages/{ids['page']}",
                 f"/spaces/TEAM/pages/{ids['page']}/edit", f"/spaces/TEAM/pages/{ids['page']}/history",
                 "/spaces/TEAM/mail", "/spaces/TEAM/mail?view=threads", "/spaces/TEAM/mail?q=hello",
                 f"/spaces/TEAM/mail/threads/{ids['thread']}", f"/spaces/TEAM/mail/messages/{ids['text']}",
                 f"/spaces/TEAM/mail/messages/{ids['html']}", "/spaces/TEAM/mail-accounts",
                 "/spaces/TEAM/mail-accounts/new", f"/spaces/TEAM/mail-accounts/{ids['account']}/edit",
                 "/spaces/TEAM/mail/import", "/spaces/TEAM/mail/trash", "/profile", "/profile/notifications",
                 "/admin/users", "/admin/users/new", "/admin/apps", "/admin/settings", "/admin/mail-archiving",
                 "/admin/mail-servers", "/admin/mail-servers/new", f"/admin/mail-servers/{ids['server']}/edit",
                 f"/admin/mail-servers/{ids['server']}/test", "/admin/mail-queue", "/admin/system",
                 "/admin/sign-in-providers", "/admin/sign-in-providers/new", "/admin/mail-servers/replies",
                 "/spaces/NOPE"):
        check(path)
    context.close()
    assert found == {}
