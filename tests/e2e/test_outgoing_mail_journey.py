"""A system admin adds a STARTTLS server, previews From, sends a test email, then watches the queue ride out an outage."""
from playwright.sync_api import expect

from tests.conftest import PASSWORD, ROOT
from tests.e2e.test_foundation_journey import htmx_settled, sign_in
from tests.smtpsinks import PASSWORD as SMTP_PASSWORD, USERNAME as SMTP_USERNAME

SCREENSHOTS = ROOT / "docs" / "screenshots"


def test_configure_smtp_send_test_and_ride_out_an_outage(app, live_server, page, console_errors, make_user, sinks,
                                                        worker_process):
    make_user("root", admin=True, full_name="Rita Root")
    sink = sinks.starttls_auth
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/admin/")
    page.get_by_role("link", name="Mail servers").click()
    expect(page.get_by_text("No SMTP server yet")).to_be_visible()
    page.get_by_role("link", name="Add SMTP server").click()

    page.get_by_label("Name", exact=True).fill("Office relay")
    page.get_by_label("From address").fill("spacemail@example.org")
    page.get_by_label("From name").fill("${fullname} via {{7*7}} Spacemail")
    expect(page.locator("#from-preview")).to_contain_text("Rita Root via {{7*7}} Spacemail <spacemail@example.org>")
    page.get_by_label("Subject prefix").fill("[Team]")
    page.get_by_label("Hostname").fill("localhost")
    expect(page.get_by_label("Port", exact=True)).to_have_value("587")
    page.get_by_label("Security").select_option("tls")
    expect(page.get_by_label("Port", exact=True)).to_have_value("465")  # the port follows the security choice
    htmx_settled(page)
    page.get_by_label("Security").select_option("starttls")
    expect(page.get_by_label("Port", exact=True)).to_have_value("587")
    htmx_settled(page)
    page.get_by_label("Port", exact=True).fill(str(sink.port))
    page.get_by_label("Username").fill(SMTP_USERNAME)
    page.get_by_label("Password").fill(SMTP_PASSWORD)
    page.get_by_label("Timeout (seconds)").fill("5")
    page.get_by_label("Trusted CA certificate (PEM, optional)").fill(sinks.ca.cert_pem)
    page.screenshot(path=str(SCREENSHOTS / "smtp-server-form.png"), full_page=True)
    page.get_by_role("button", name="Add server").click()
    row = page.get_by_role("row", name="Office relay")
    expect(row).to_contain_text("Default")
    expect(row).to_contain_text("Not tested")

    row.get_by_role("link", name="Send test email").click()
    expect(page.get_by_label("To", exact=True)).to_have_value("root@example.org")
    page.get_by_role("button", name="Send test email").click()
    expect(page.get_by_text("Delivered.")).to_be_visible(timeout=20_000)
    page.get_by_text("The SMTP conversation (passwords masked)").click()
    expect(page.locator(".transcript")).to_contain_text("C: AUTH PLAIN ****")
    assert SMTP_PASSWORD not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "smtp-test-email-delivered.png"), full_page=True)
    assert len(sink.messages) == 1
    message = sink.messages[0].message
    assert message["Subject"] == "[Team] Test email from Spacemail"
    assert str(message["From"]) == "Rita Root via {{7*7}} Spacemail <spacemail@example.org>"

    # The server goes down: a mail sent through the queue waits with its error.
    sink.stop()
    page.get_by_label("Through the mail queue, retried like other mail").check()
    page.get_by_label("Subject").fill("Queued while the server was down")
    page.get_by_role("button", name="Send test email").click()
    expect(page.get_by_text("Waiting in the mail queue")).to_be_visible(timeout=20_000)
    page.get_by_role("link", name="Mail queue").click()
    queued = page.get_by_role("row", name="Queued while the server was down")
    expect(queued).to_contain_text("Nothing accepts connections")
    expect(queued).to_contain_text("1")  # one attempt so far
    page.get_by_role("button", name="Flush mail queue").click()
    expect(page.locator("#queued-mail")).to_contain_text("Office relay: Nothing accepts connections", timeout=20_000)
    htmx_settled(page)
    expect(page.locator("#queued-mail tbody tr").first).to_contain_text("2", timeout=20_000)  # tried again
    page.screenshot(path=str(SCREENSHOTS / "mail-queue-waiting.png"), full_page=True)

    # Back up: a flush empties the queue, and the list says so in place.
    sink.start()
    page.get_by_role("button", name="Flush mail queue").click()
    expect(page.get_by_text("Nothing is waiting to be sent.")).to_be_visible(timeout=20_000)
    expect(page.locator("#recently-sent")).to_contain_text("Queued while the server was down")
    page.screenshot(path=str(SCREENSHOTS / "mail-queue-empty.png"), full_page=True)
    assert [m.message["Subject"] for m in sink.messages] == ["[Team] Test email from Spacemail",
                                                             "[Team] Queued while the server was down"]
    assert console_errors == []
