"""A person signed in on two browsers signs one out from Profile › Sessions; the other is at once signed out."""
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in


def test_sign_out_another_browser_in_place(app, live_server, page, browser, console_errors, make_user):
    make_user("ann")
    phone_context = browser.new_context(user_agent="AnnPhone/2.0")
    phone = phone_context.new_page()
    sign_in(phone, live_server, "ann", PASSWORD)
    expect(phone).to_have_url(f"{live_server}/spaces")  # signed in there before the other browser looks
    sign_in(page, live_server, "ann", PASSWORD)
    page.goto(f"{live_server}/profile")
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#sessions")).to_contain_text("(this browser)")
    phone_row = rows.filter(has_text="AnnPhone/2.0")
    phone_row.get_by_role("button", name="Sign out").click()
    expect(rows).to_have_count(1)  # gone in place, no reload
    phone.goto(f"{live_server}/profile")
    expect(phone).to_have_url(f"{live_server}/login?next=/profile")
    page.reload()
    expect(page.get_by_role("heading", name="Your profile")).to_be_visible()  # this browser stays signed in
    phone_context.close()
    assert console_errors == []
