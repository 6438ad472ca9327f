"""Readers in a browser: hostile HTML renders harmlessly; search, thread, attachment; screenshots."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from tests.archive.helpers import message as make_message
from tests.archive.hostile_html import HOSTILE_HTML
from tests.conftest import PASSWORD, ROOT
from tests.e2e.test_foundation_journey import sign_in
from webapp.archive import ingest
from webapp.extensions import db
from webapp.spaces.models import VIEW, SpaceRole
from webapp.spaces.services import create_site_space

SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture
def remote_host():
    """A stand-in for the internet: an HTTP server on loopback that remembers every request it gets."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.end_headers()
            self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def html_mail(i: int, body: str) -> bytes:
    return (f"From: Mallory <mallory@example.org>\r\nSubject: Hostile {i:02d}\r\nMessage-ID: <hostile{i}@x>\r\n"
            "Date: Mon, 5 Jan 2026 10:00:00 +0000\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><p>Hostile mail {i}</p>{body}</body></html>\r\n").encode()


@pytest.fixture
def reader(app, make_user, db):
    admin, reader = make_user("ann"), make_user("rita", full_name="Rita Reader")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.add(SpaceRole(space=space, user=reader, role=VIEW))
    db.session.commit()
    return space


def test_hostile_html_runs_nothing_and_loads_nothing(app, live_server, page, reader, remote_host):
    evil, seen = remote_host
    ids = []
    for i, body in enumerate(HOSTILE_HTML):
        message_id, _ = ingest.store(reader.id, None, html_mail(i, body.replace("EVIL", evil)))
        ids.append(message_id)
    db.session.commit()
    assert len(ids) >= 40
    dialogs, app_requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: app_requests.append(r.url) if r.url.startswith(live_server) else None)
    sign_in(page, live_server, "rita", PASSWORD)
    for i, message_id in enumerate(ids):
        app_requests.clear()
        page.goto(f"{live_server}/spaces/TEAM/mail/messages/{message_id}")
        frame = page.frame_locator("iframe.mail-body")
        expect(frame.get_by_text(f"Hostile mail {i}")).to_be_visible(timeout=15_000)  # slow when CI is busy
        page.wait_for_timeout(150)  # let any timer or autofocus a payload sets up fire
        unexpected = [u for u in app_requests if "/mail/messages/" not in u and "/static/" not in u]
        unexpected = [u for u in unexpected if not u.endswith("/favicon.ico")]
        assert unexpected == [], f"payload {i} made the app receive {unexpected}"
        assert dialogs == [], f"payload {i} ran script: {dialogs}"
    assert seen == [], f"remote requests before 'show images': {seen}"
    assert page.evaluate("document.cookie") is not None  # the page itself is intact and signed in

    tracker = ids[HOSTILE_HTML.index("<img src='EVIL/tracker.gif' width=1 height=1>")]
    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{tracker}")
    page.get_by_role("link", name="Show images").click()
    expect(page.frame_locator("iframe.mail-body").get_by_text("Hostile mail")).to_be_visible()
    page.wait_for_timeout(300)
    assert seen == ["/tracker.gif"] and dialogs == []  # images on request, and still no script
    page.screenshot(path=str(SCREENSHOTS / "hostile-html-message.png"), full_page=True)


def test_reader_searches_opens_a_thread_and_downloads_an_attachment(app, live_server, page, reader, console_errors):
    ingest.store(reader.id, None, make_message(1, subject="Zebra crossing plan", msgid="q1@x"))
    ingest.store(reader.id, None, make_message(2, subject="Re: Zebra crossing plan", msgid="q2@x", reply_to="q1@x",
                                               attachment=True))
    for i in range(3, 30):
        ingest.store(reader.id, None, make_message(i))
    db.session.commit()
    sign_in(page, live_server, "rita", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM/mail")
    expect(page.get_by_role("link", name="Re: Zebra crossing plan")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "mail-tab.png"), full_page=True)

    page.get_by_label("Search").press_sequentially("zebra", delay=30)
    expect(page).to_have_url(f"{live_server}/spaces/TEAM/mail?q=zebra&sender=&month=&view=messages&order=newest")
    expect(page.locator("mark").first).to_have_text("zebra", ignore_case=True)
    rows = page.locator("#mail-results tbody tr")
    expect(rows).to_have_count(2)
    page.screenshot(path=str(SCREENSHOTS / "mail-search.png"), full_page=True)
    page.go_back()  # the pushed URL makes Back work: the full list again
    expect(page).to_have_url(f"{live_server}/spaces/TEAM/mail")
    expect(page.locator("#mail-results tbody tr")).to_have_count(29)
    page.go_forward()
    expect(page.locator("#mail-results tbody tr")).to_have_count(2)

    page.get_by_role("link", name="Re: Zebra crossing plan").click()
    page.get_by_role("link", name="2 messages").click()
    expect(page.locator(".thread-message")).to_have_count(2)
    page.screenshot(path=str(SCREENSHOTS / "mail-thread.png"), full_page=True)
    page.get_by_role("link", name="Re: Zebra crossing plan").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="report.pdf").click()
    assert download.value.suggested_filename == "report.pdf"
    assert console_errors == []


def test_opening_an_html_attachment_directly_runs_nothing(app, live_server, page, reader):
    raw = (b"From: m@example.org\r\nSubject: Invoice\r\nMessage-ID: <inv@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: text/html\r\n"
           b"Content-Disposition: inline; filename=\"invoice.html\"\r\n\r\n<script>alert('attachment ran')</script>\r\n--b--\r\n")
    message_id, _ = ingest.store(reader.id, None, raw)
    db.session.commit()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, live_server, "rita", PASSWORD)
    page.goto(f"{live_server}/spaces/TEAM/mail/messages/{message_id}")
    href = page.get_by_role("link", name="invoice.html").get_attribute("href")
    with page.expect_download() as download:
        page.evaluate("url => { window.location.href = url }", f"{live_server}{href}")
    assert download.value.suggested_filename == "invoice.html"
    page.wait_for_timeout(300)
    assert dialogs == [] and page.url.endswith(f"/messages/{message_id}")  # downloaded, never rendered
