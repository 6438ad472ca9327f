"""First run to shared space, as people do it in a browser."""
from pathlib import Path

from playwright.sync_api import expect

from webapp.auth.services import issue_setup_token
from tests.conftest import ROOT

SCREENSHOTS = ROOT / "docs" / "screenshots"
PW = "a long enough password"


def htmx_settled(page):
    """Wait until htmx has swapped and settled (it wires up new content at the end of the settle)."""
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')")


def sign_in(page, base, username, password):
    page.goto(f"{base}/login")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()


def test_first_run_to_a_shared_space(app, live_server, page, console_errors):
    base = live_server
    token = issue_setup_token()

    # First run: the printed link creates the administrator.
    page.goto(f"{base}/setup?token={token}")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Full name").fill("Rita Root")
    page.get_by_label("Email").fill("rita@example.org")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Repeat password").fill(PW)
    page.get_by_role("button", name="Create administrator").click()
    expect(page.get_by_text("Welcome! You are the system administrator.")).to_be_visible()
    page.goto(f"{base}/setup?token={token}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()  # the link worked once

    sign_out(page)
    sign_in(page, base, "root", PW)
    expect(page.get_by_role("heading", name="Spaces", exact=True)).to_be_visible()

    # A site space.
    page.get_by_role("link", name="Create space").click()
    page.get_by_label("Name").fill("Team")
    page.get_by_label("Space key").fill("team")
    page.get_by_label("Description").fill("Where the team keeps its mail.")
    page.get_by_role("button", name="Create space").click()
    expect(page.get_by_role("heading", name="Team", exact=True)).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "space-home.png"), full_page=True)

    # A second person, created by the administrator.
    page.get_by_role("link", name="Administration").click()
    page.get_by_role("link", name="Create user").click()
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Full name").fill("Bob Builder")
    page.get_by_label("Email").fill("bob@example.org")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Repeat password").fill(PW)
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("row", name="Bob Builder")).to_be_visible()

    # The htmx permissions page: add, change, all in place (the page is never reloaded).
    page.goto(f"{base}/spaces/TEAM/permissions")
    page.evaluate("window.__stillTheSamePage = true")
    page.get_by_label("Person (username or email)").fill("nobody")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_text("Nobody has that username or email.")).to_be_visible()
    htmx_settled(page)
    page.get_by_label("Person (username or email)").fill("bob")
    page.get_by_label("Role", exact=True).select_option("view")
    page.get_by_role("button", name="Add").click()
    bob_row = page.get_by_role("row", name="Bob Builder")
    expect(bob_row).to_be_visible()
    expect(page.get_by_label("Role of Bob Builder")).to_have_value("view")
    for role in ("edit", "view"):
        htmx_settled(page)
        old_select = page.get_by_label("Role of Bob Builder").element_handle()
        old_select.select_option(role)
        page.wait_for_function("el => !el.isConnected", arg=old_select)  # htmx swapped in the server's row
        expect(page.get_by_label("Role of Bob Builder")).to_have_value(role)
    assert page.evaluate("window.__stillTheSamePage") is True
    page.reload()
    expect(page.get_by_label("Role of Bob Builder")).to_have_value("view")  # and the server holds it
    page.screenshot(path=str(SCREENSHOTS / "space-permissions.png"), full_page=True)
    sign_out(page)

    # Bob sees the space and cannot open its settings.
    sign_in(page, base, "bob", PW)
    page.get_by_role("link", name="Team").click()
    expect(page.get_by_text("Your role here: View")).to_be_visible()
    expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    response = page.goto(f"{base}/spaces/TEAM/settings")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()

    assert [e for e in console_errors if "403" not in e and "404" not in e] == []
