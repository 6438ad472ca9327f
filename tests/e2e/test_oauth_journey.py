"""Sign in with a provider, in Chromium: a system admin adds the provider; a space admin adds a mail account with
"Sign in with …", consents on the authorization server's page, tests and fetches; an SMTP server signing in the
same way sends a test email to the sink."""
from playwright.sync_api import expect

from tests.archive.helpers import mixed_mailbox
from tests.conftest import PASSWORD, ROOT
from tests.e2e.test_foundation_journey import htmx_settled, sign_in, sign_out
from tests.oauth_helpers import mailbox_address
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET
from webapp.extensions import db
from webapp.settings import SiteSettings
from webapp.spaces.services import create_site_space

SCREENSHOTS = ROOT / "docs" / "screenshots"


def test_provider_account_and_smtp_server_with_oauth(app, live_server, page, console_errors, make_user, oauth_server,
                                                    oauth_dovecot, oauth_smtp, worker_process):
    app.config.update(BASE_URL=live_server, OAUTH_ALLOW_HTTP_LOOPBACK=True)
    oauth_server.client.redirect_uris.add(f"{live_server}/oauth/callback")
    make_user("root", admin=True, full_name="Rita Root")
    ann = make_user("ann", full_name="Ann Admin")
    create_site_space(ann, "TEAM", "Team")
    SiteSettings.get().mail_host_allowlist = "127.0.0.1"
    db.session.commit()
    mailbox, _ = oauth_dovecot.add_user()
    oauth_dovecot.deliver(mailbox, mixed_mailbox())

    # The system admin adds the provider and sees what to register in its console.
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/admin/")
    page.get_by_role("link", name="Sign-in providers").click()
    page.get_by_role("link", name="Add provider").click()
    expect(page.locator("#redirect-uri")).to_have_text(f"{live_server}/oauth/callback")
    page.get_by_label("Provider", exact=True).select_option("generic")
    page.get_by_label("Name", exact=True).fill("Test Provider")
    page.get_by_label("Client id").fill(CLIENT_ID)
    page.get_by_label("Client secret").fill(CLIENT_SECRET)
    page.get_by_label("Discovery URL (another provider)").fill(f"{oauth_server.base}/.well-known/openid-configuration")
    page.get_by_label("Scopes").fill("openid email offline_access https://mail.test/mail")
    page.get_by_label("Mail servers its tokens may go to").fill("localhost")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Sign-in provider Test Provider added.")).to_be_visible()
    expect(page.locator("#asked-scopes")).to_have_text("openid email offline_access https://mail.test/mail")
    page.screenshot(path=str(SCREENSHOTS / "sign-in-provider.png"), full_page=True)
    assert CLIENT_SECRET not in page.content()
    sign_out(page)

    # The space admin adds a mail account that signs in with it.
    sign_in(page, live_server, "ann", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM/mail-accounts/new")
    page.get_by_label("Account name").fill("Provider inbox")
    page.get_by_label("Hostname").fill("localhost")
    page.get_by_label("Port", exact=True).fill(str(oauth_dovecot.ports["imaps"]))
    page.get_by_label("Trusted CA certificate (PEM, optional)").fill(oauth_dovecot.ca.cert_pem)
    page.get_by_label("Authentication").select_option(label="Sign in with Test Provider")
    htmx_settled(page)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.get_by_role("heading", name="Test provider")).to_be_visible(timeout=10_000)
    page.get_by_label("Sign in as").fill(mailbox_address(mailbox))
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("#sign-in-status")).to_contain_text(f"Connected as {mailbox_address(mailbox)}")
    expect(page.get_by_label("Username")).to_have_value(mailbox_address(mailbox))
    expect(page.get_by_label("Account name")).to_have_value("Provider inbox")  # the form came back as it was
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_text("Connection works.")).to_be_visible(timeout=20_000)
    page.screenshot(path=str(SCREENSHOTS / "mail-account-oauth.png"), full_page=True)
    page.get_by_role("button", name="Create").click()
    row = page.get_by_role("row", name="Provider inbox")
    expect(row).to_contain_text("Sign in with Test Provider")

    page.get_by_role("link", name="Mail", exact=True).click()
    page.get_by_role("button", name="Fetch new mail").click()
    expect(page.get_by_text("5 messages in the archive.")).to_be_visible(timeout=30_000)
    assert oauth_dovecot.mailbox_files(mailbox) == []
    sign_out(page)

    # The system admin adds an SMTP server that signs in with the provider and sends a test email.
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/admin/mail-servers/new")
    page.get_by_label("Name", exact=True).fill("Provider SMTP")
    page.get_by_label("From address").fill("spacemail@example.org")
    page.get_by_label("Hostname").fill("localhost")
    page.get_by_label("Port", exact=True).fill(str(oauth_smtp.port))
    page.get_by_label("Trusted CA certificate (PEM, optional)").fill(oauth_smtp.ca.cert_pem)
    page.get_by_label("Authentication").select_option(label="Sign in with Test Provider")
    page.get_by_role("button", name="Connect", exact=True).click()
    page.get_by_label("Sign in as").fill("mailer@mail.test")
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("#sign-in-status")).to_contain_text("Connected as mailer@mail.test")
    page.get_by_role("button", name="Add server").click()
    row = page.get_by_role("row", name="Provider SMTP")
    row.get_by_role("link", name="Send test email").click()
    page.get_by_role("button", name="Send test email").click()
    expect(page.get_by_text("Delivered.")).to_be_visible(timeout=20_000)
    assert [m.login for m in oauth_smtp.messages] == ["mailer@mail.test"]
    assert [e for e in console_errors if oauth_server.base not in e] == []  # (the provider's page has no favicon)
