"""The rough edges that only a browser shows (issue 18): styled inputs, the suggested space key, confirmations,
the HTML mail frame sized to its content."""
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in
from webapp.archive import ingest
from webapp.extensions import db
from webapp.spaces.services import create_site_space


def frame_height(page, wanted, tries=100) -> float:
    """The mail frame's height once `wanted(height)` holds, or as it is after 10 s (the page's CSP allows no eval,
    so no wait_for_function)."""
    for _ in range(tries):
        height = page.locator("iframe.mail-body").bounding_box()["height"]
        if wanted(height):
            break
        page.wait_for_timeout(100)
    return height


def test_rough_edges_in_a_browser(app, live_server, page, console_errors, make_user):
    root = make_user("root", admin=True)
    space = create_site_space(root, "TEAM", "Team")
    long_html = "".join(f"<p>Paragraph {i} of a long newsletter.</p>" for i in range(120))
    long_id, _ = ingest.store(space.id, None, (
        "From: News <news@example.org>\r\nSubject: Long\r\nMessage-ID: <long@x>\r\nContent-Type: text/html\r\n\r\n"
        f"{long_html}\r\n").encode())
    short_id, _ = ingest.store(space.id, None, b"From: A <a@example.org>\r\nSubject: Short\r\nMessage-ID: <s@x>\r\n"
                                               b"Content-Type: text/html\r\n\r\n<p>Just one line.</p>\r\n")
    db.session.commit()
    sign_in(page, live_server, "root", PASSWORD)

    page.goto(f"{live_server}/spaces/TEAM/mail")
    for label in ("Search", "Month"):
        box = page.get_by_label(label, exact=True).bounding_box()
        assert box["height"] >= 30 and box["width"] >= 120, (label, box)  # not a tiny unstyled box

    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{long_id}")
    frame = page.locator("iframe.mail-body")
    expect(frame.content_frame.get_by_text("Paragraph 119 of a long newsletter.")).to_be_attached()
    assert frame_height(page, lambda h: h > 1500) > 1500
    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{short_id}")
    expect(page.locator("iframe.mail-body").content_frame.get_by_text("Just one line.")).to_be_visible()
    assert frame_height(page, lambda h: h < 200) < 200

    page.goto(f"{live_server}/spaces/new")
    page.get_by_label("Name").fill("Product Design and Research")
    expect(page.get_by_label("Space key")).to_have_value("PDAR")
    page.get_by_label("Space key").fill("PDR")
    page.get_by_label("Name").fill("Product Design")
    expect(page.get_by_label("Space key")).to_have_value("PDR")  # their own key stays

    page.goto(f"{live_server}/admin/apps")
    switch = page.get_by_role("switch", name="Mail archiving for the whole site")
    expect(switch).to_have_attribute("aria-checked", "true")
    page.once("dialog", lambda dialog: dialog.dismiss())
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")  # dismissed: still on
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    switch.click()
    expect(page.get_by_role("switch", name="Mail archiving for the whole site")).to_have_attribute("aria-checked",
                                                                                                  "false")
    assert messages and messages[0].startswith("Switch off mail archiving for every space?")
    assert console_errors == []


def test_more_rough_edges_one_assertion_each(app, live_server, page, console_errors, make_user, sinks, run_jobs):
    from tests.archive.helpers import message as make_message
    from tests.outgoing.helpers import add_server
    from webapp.archive.models import Message
    from webapp.content.services import create_page
    from webapp.outgoing.queue import queue_mail
    from webapp.settings import SiteSettings

    root = make_user("root", admin=True)
    space = create_site_space(root, "TEAM", "Team")
    for i in range(60):
        ingest.store(space.id, None, make_message(i, subject=f"Number {i:03d}", attachment=i == 59))
    for i in range(3):
        ingest.store(space.id, None, make_message(100 + i, subject=f"Topic {i}"))
    runbook = create_page(space, root, "Runbook", "v1")
    add_server(sinks, sinks.plain)
    for i in range(3):
        queue_mail(f"r{i}@example.org", "Queued", "Body")
    db.session.commit()
    sign_in(page, live_server, "root", PASSWORD)

    page.goto(f"{live_server}/spaces/TEAM/mail")
    page.get_by_role("link", name="Older →").click()
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text("Messages 51–63")  # where you are
    expect(page.get_by_role("link", name="← Newest")).to_be_visible()  # the way back beside Older

    with_file = db.session.query(Message).filter_by(subject="Number 059").one()
    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{with_file.id}")
    expect(page.locator(".attachments, ul").filter(has_text="application/pdf")).to_contain_text(" bytes")

    topic = db.session.query(Message).filter_by(subject="Topic 1").one()
    page.goto(f"{live_server}/spaces/TEAM/mail/threads/{topic.thread_id}")
    expect(page.get_by_role("link", name="← Newer thread: Topic 2")).to_be_visible()

    page.goto(f"{live_server}/spaces/new")
    expect(page.get_by_label("Description (optional)")).to_be_visible()

    page.goto(f"{live_server}/profile")
    expect(page.get_by_text("At least 10 characters").first).to_be_visible()

    page.goto(f"{live_server}/admin/mail-servers/new")
    page.get_by_label("From name").fill("${full_name} via Team")
    page.get_by_role("button", name="Add server").click()
    expect(page.get_by_text("Unknown variable ${full_name}: the From name knows")).to_be_visible()

    page.goto(f"{live_server}/admin/settings")
    expect(page.get_by_label("Daily report subject")).to_have_value("Your daily report")

    page.goto(f"{live_server}/admin/mail-queue")
    page.get_by_role("button", name="Flush mail queue").click()
    expect(page.get_by_text("Sending 3 queued mails now")).to_be_visible()
    run_jobs()
    expect(page.get_by_text("Nothing is waiting to be sent.")).to_be_visible()  # the list follows by itself

    page.goto(f"{live_server}/spaces/TEAM/pages/{runbook.id}/edit")
    page.get_by_label("Content (Markdown)").fill("v2")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Watchers will be told at")).to_be_visible()

    SiteSettings.get().mail_archiving_enabled = False
    db.session.commit()
    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{topic.id}")
    expect(page.get_by_text("Mail archiving is switched off on this site")).to_be_visible()
    assert [e for e in console_errors if "status of 404" not in e] == []  # that last page is a 404, saying why


def test_fetching_testing_and_the_from_preview_in_a_browser(app, live_server, page, console_errors, make_user,
                                                            run_jobs):
    from tests.e2e.test_foundation_journey import htmx_settled
    from webapp.archive.models import FetchRun
    from tests.archive.helpers import team_inbox
    from webapp.settings import SiteSettings

    SiteSettings.get().site_title = "Team Hub"
    root = make_user("root", admin=True, full_name="Rita Root")
    space = create_site_space(root, "TEAM", "Team")
    account = team_inbox(space)
    db.session.add(FetchRun(account_id=account.id, state="running", total=1200, fetched=300, duplicates=12))
    db.session.commit()
    sign_in(page, live_server, "root", PASSWORD)

    page.goto(f"{live_server}/spaces/TEAM/mail")
    expect(page.get_by_text("fetching: 312 of 1,200…")).to_be_visible()  # live counts
    expect(page.get_by_role("button", name="Fetching…")).to_be_disabled()  # no second fetch while one runs

    page.goto(f"{live_server}/spaces/TEAM/mail-accounts/new")
    page.get_by_label("Account name").fill("LAN box")
    page.get_by_label("Hostname").fill("127.0.0.1")
    page.get_by_label("Username").fill("team")
    page.get_by_label("Password").fill("secret password")
    htmx_settled(page)
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("button", name="Testing…")).to_be_disabled()  # while the test runs
    expect(page.get_by_role("status")).to_contain_text("Testing the connection")  # queued: the answer is here
    run_jobs()
    expect(page.locator("#connection-test")).to_contain_text(
        "Administration › Manage apps › Mail archiving settings", timeout=10_000)  # the menu path that exists
    expect(page.get_by_role("button", name="Test connection")).to_be_enabled()

    page.goto(f"{live_server}/admin/mail-servers/new")
    page.get_by_label("From address").fill("hub@example.org")
    page.get_by_label("From name").fill("${fullname} via Team Hub")
    expect(page.locator("#from-preview")).to_contain_text("The site's own mail (daily reports, invitations): "
                                                          "Team Hub <hub@example.org>")  # no "Team Hub via Team Hub"
    assert console_errors == []


def test_plain_imap_to_a_server_offering_starttls_says_to_turn_it_on(app, live_server, page, console_errors,
                                                                    make_user, dovecot, run_jobs):
    from tests.archive.helpers import allow_loopback
    from tests.e2e.test_foundation_journey import htmx_settled

    root = make_user("root", admin=True)
    create_site_space(root, "TEAM", "Team")
    db.session.commit()
    allow_loopback()
    user, password = dovecot.add_user()
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM/mail-accounts/new")
    page.get_by_label("Account name").fill("Plain box")
    page.get_by_label("Protocol").select_option("imap")
    expect(page.get_by_label("Port", exact=True)).to_have_value("143")
    htmx_settled(page)
    page.get_by_label("Hostname").fill("localhost")
    page.get_by_label("Port", exact=True).fill(str(dovecot.ports["imap"]))
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Require STARTTLS (encrypt the plain port; never fall back)").uncheck()
    page.get_by_role("button", name="Test connection").click()
    # The job is queued once the answer is on the page (a burst worker started before would find nothing).
    expect(page.get_by_role("status")).to_contain_text("Testing the connection")
    run_jobs()
    expect(page.locator("#starttls-offered")).to_have_text("The server offers STARTTLS:", timeout=10_000)
    assert console_errors == []
