"""A space admin adds an IMAPS account, tests it, creates it, fetches, sees the count, and disables it."""
from playwright.sync_api import expect

from tests.archive.helpers import allow_loopback, mixed_mailbox
from tests.conftest import PASSWORD, ROOT
from tests.e2e.test_foundation_journey import htmx_settled, sign_in
from webapp.extensions import db
from webapp.spaces.services import create_site_space

SCREENSHOTS = ROOT / "docs" / "screenshots"


def test_add_test_create_fetch_disable(app, live_server, page, console_errors, make_user, dovecot, worker_process):
    admin = make_user("ann", full_name="Ann Admin")
    create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    allow_loopback()  # a system admin allowed the LAN's mail server
    mailbox_user, mailbox_password = dovecot.add_user()
    dovecot.deliver(mailbox_user, mixed_mailbox())

    sign_in(page, live_server, "ann", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM")
    page.get_by_role("link", name="Mail accounts").click()
    page.get_by_role("link", name="Add mail account").click()

    page.get_by_label("Account name").fill("Team inbox")
    port = page.get_by_label("Port", exact=True)
    expect(port).to_have_value("993")
    page.get_by_label("Protocol").select_option("imap")
    expect(page.get_by_label("Port", exact=True)).to_have_value("143")  # htmx swapped the protocol's fields
    expect(page.get_by_label("Folder")).to_be_visible()
    htmx_settled(page)
    page.get_by_label("Protocol").select_option("imaps")
    expect(page.get_by_label("Port", exact=True)).to_have_value("993")
    htmx_settled(page)
    page.get_by_label("Hostname").fill("localhost")
    page.get_by_label("Port", exact=True).fill(str(dovecot.ports["imaps"]))
    page.get_by_label("Username").fill(mailbox_user)
    page.get_by_label("Password").fill(mailbox_password)
    page.get_by_label("Trusted CA certificate (PEM, optional)").fill(dovecot.ca.cert_pem)

    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_text("Connection works.")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("the mailbox holds 5 messages")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "mail-account-test.png"), full_page=True)

    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("row", name="Team inbox")).to_be_visible()

    page.get_by_role("link", name="Mail", exact=True).click()
    page.wait_for_load_state()  # htmx has loaded (without it the button posts the form, which also works)
    page.get_by_role("button", name="Fetch new mail").click()
    expect(page.get_by_text("5 messages in the archive.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("5 new")).to_be_visible()
    page.reload()
    expect(page.get_by_role("cell", name="Grüße aus München")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "mail-tab-after-fetch.png"), full_page=True)
    assert dovecot.mailbox_files(mailbox_user) == []

    page.get_by_role("link", name="Mail accounts").click()
    switch = page.get_by_role("switch", name="Fetch Team inbox")
    expect(switch).to_have_text("Enabled")
    switch.click()
    expect(page.get_by_role("switch", name="Fetch Team inbox")).to_have_text("Disabled")
    page.reload()
    expect(page.get_by_role("switch", name="Fetch Team inbox")).to_have_text("Disabled")
    assert console_errors == []
