"""People in a browser: invite -> accept -> sign in; forgot password -> reset -> the other sessions are over.
The links are read from what the real SMTP sink received."""
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in, sign_out
from tests.outgoing.helpers import add_server
from tests.test_account_links import links_in

NEW_PASSWORD = "correct horse battery staple"


def test_invite_accept_and_sign_in(app, live_server, page, browser, console_errors, make_user, sinks, run_jobs):
    add_server(sinks, sinks.plain)
    make_user("root", admin=True, full_name="Rita Root")
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/admin/users")
    invite = page.locator("#invitations")
    invite.get_by_label("Email").fill("sam.new@example.org")
    invite.get_by_label("May create site spaces").check()
    invite.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("Invitation sent to sam.new@example.org")).to_be_visible()
    expect(page.locator("#invitations tbody tr").filter(has_text="sam.new@example.org")).to_contain_text("Rita Root")
    run_jobs()
    [path] = links_in(sinks.plain, "sam.new@example.org")

    guest_context = browser.new_context()
    guest = guest_context.new_page()
    guest.goto(live_server + path)
    expect(guest).to_have_url(f"{live_server}/invite")  # the secret is out of the address bar
    expect(guest.get_by_text("You were invited as")).to_contain_text("Rita Root")
    expect(guest.get_by_label("Username")).to_have_value("sam.new")
    expect(guest.get_by_text("At least 10 characters")).to_be_visible()  # the rule before any error
    guest.get_by_label("Full name").fill("Sam New")
    guest.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    guest.get_by_label("Repeat password").fill(NEW_PASSWORD)
    guest.get_by_role("button", name="Create my account").click()
    expect(guest.get_by_text("Welcome, Sam New!")).to_be_visible()
    sign_out(guest)
    sign_in(guest, live_server, "sam.new@example.org", NEW_PASSWORD)
    expect(guest).to_have_url(f"{live_server}/spaces")
    guest.goto(live_server + path)  # the link again: used up, and the page says what to do
    expect(guest.get_by_role("heading", name="This invitation cannot be used")).to_be_visible()
    page.reload()
    expect(page.locator("#invitations")).to_contain_text("No invitation is waiting.")
    guest_context.close()
    assert console_errors == []


def test_forgot_password_reset_ends_old_sessions(app, live_server, page, browser, console_errors, make_user, sinks,
                                                 run_jobs):
    add_server(sinks, sinks.plain)
    make_user("ann")
    phone_context = browser.new_context()
    phone = phone_context.new_page()
    sign_in(phone, live_server, "ann", PASSWORD)
    expect(phone).to_have_url(f"{live_server}/spaces")

    page.goto(f"{live_server}/login")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Username or email").fill("ann@example.org")
    page.get_by_role("button", name="Send me a link").click()
    expect(page.get_by_role("status")).to_contain_text("a link to set a new password is on its way")
    run_jobs()
    [path] = links_in(sinks.plain, "ann@example.org")
    page.goto(live_server + path)
    expect(page).to_have_url(f"{live_server}/login/reset")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Repeat password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_text("Your new password is set. Every other session of yours is signed out.")).to_be_visible()

    phone.goto(f"{live_server}/profile")
    expect(phone).to_have_url(f"{live_server}/login?next=/profile")  # the phone's session ended
    sign_in(phone, live_server, "ann", PASSWORD)
    expect(phone.get_by_role("alert")).to_contain_text("Wrong username or password")
    sign_in(phone, live_server, "ann", NEW_PASSWORD)
    expect(phone).to_have_url(f"{live_server}/spaces")
    phone_context.close()
    assert console_errors == []
