"""Readers browse the Mail tab: keyset pages, filters, threads, messages, attachments, source and mbox."""
import mailbox
import re

import pytest

from tests.archive.helpers import message as make_message
from tests.archive.helpers import team_with_reader
from webapp.archive import ingest
from webapp.archive.models import Message


@pytest.fixture
def reader(app, db, make_user, login):
    return team_with_reader(db, make_user, login)


def store(space, raw) -> Message:
    message_id, _ = ingest.store(space.id, None, raw)
    return message_id


def test_keyset_pages_newest_first_with_htmx_and_without(client, reader, db):
    for i in range(120):
        store(reader, make_message(i, subject=f"Number {i:03d}"))
    db.session.commit()
    page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    subjects = re.findall(r"Number (\d{3})", page)
    assert subjects[:3] == ["119", "118", "117"] and len(subjects) == 50
    older = re.search(r'href="(/spaces/TEAM/mail\?before=[^"]+)"', page).group(1).replace("&amp;", "&")
    second = client.htmx_get(older)
    body = second.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<div id="mail-results"')
    assert re.findall(r"Number (\d{3})", body)[0] == "069" and "HX-Request" in second.headers["Vary"]
    third = client.get(re.search(r'href="(/spaces/TEAM/mail\?before=[^"]+)"', body).group(1).replace("&amp;", "&"))
    numbers = re.findall(r"Number (\d{3})", third.get_data(as_text=True))
    assert numbers[0] == "019" and numbers[-1] == "000" and "Older" not in third.get_data(as_text=True)
    assert third.headers["Cache-Control"] == "private, no-store"


def test_filters_sender_month_attachments_and_search(client, reader, db):
    store(reader, make_message(1, subject="Plain from ann"))
    store(reader, make_message(2, subject="With file", attachment=True, sender=("Bob", "bob@example.org")))
    store(reader, make_message(60 * 24 * 40, subject="February budget"))  # 40 days later: February
    db.session.commit()
    text = lambda url: client.get(url).get_data(as_text=True)  # noqa: E731
    assert "With file" in text("/spaces/TEAM/mail?sender=bob") and "Plain from ann" not in text("/spaces/TEAM/mail?sender=bob")
    feb = text("/spaces/TEAM/mail?month=2026-02")
    assert "February budget" in feb and "With file" not in feb
    files = text("/spaces/TEAM/mail?attachments=1")
    assert "With file" in files and "Plain from ann" not in files
    found = client.htmx_get("/spaces/TEAM/mail?q=february").get_data(as_text=True)
    assert "February budget" in found and "Plain from ann" not in found
    assert "No messages match." in text("/spaces/TEAM/mail?q=nothinglikethis")
    assert client.get("/spaces/TEAM/mail?month=2026-13&before=garbage").status_code == 200


def test_thread_list_and_thread_page_in_reply_order(client, reader, db):
    store(reader, make_message(1, subject="Lunch?", msgid="a@x"))
    store(reader, make_message(3, subject="Re: Lunch?", msgid="c@x", reply_to="b@x"))  # arrives before its parent
    store(reader, make_message(2, subject="Re: Lunch?", msgid="b@x", reply_to="a@x"))
    db.session.commit()
    threads = client.get("/spaces/TEAM/mail?view=threads").get_data(as_text=True)
    thread_id = int(re.search(r"/mail/threads/(\d+)", threads).group(1))
    assert ">3<" in threads.replace("</td>", "<").replace("<td>", ">")
    page = client.get(f"/spaces/TEAM/mail/threads/{thread_id}").get_data(as_text=True)
    order = [int(m) for m in re.findall(r'id="message-(\d+)"', page)]
    depths = re.findall(r'thread-message depth-(\d+)', page)
    assert len(order) == 3 and depths == ["0", "1", "2"]


def test_plain_text_message_links_and_folded_quotes(client, reader, db):
    raw = (b"From: Ann <ann@example.org>\r\nSubject: Notes\r\nMessage-ID: <n@x>\r\n\r\n"
           b"See https://example.org/page?a=1&b=2 for more.\r\n> earlier words\r\n> more of them\r\nThanks\r\n")
    message_id = store(reader, raw)
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
    assert '<a href="https://example.org/page?a=1&amp;b=2" rel="noopener noreferrer nofollow"' in page
    assert "<details class=\"quoted\"><summary>Quoted text</summary>&gt; earlier words" in page


def test_html_message_is_framed_sandboxed_and_remote_images_wait(client, reader, db):
    raw = (b"From: Ann <ann@example.org>\r\nSubject: Newsletter\r\nMessage-ID: <h@x>\r\n"
           b"Content-Type: text/html\r\n\r\n<p onclick=\"alert(1)\">Hello<script>alert(2)</script>"
           b"<img src=\"https://tracker.example/p.gif\"><a href=\"javascript:alert(3)\">x</a></p>\r\n")
    message_id = store(reader, raw)
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
    # Same origin only so that the page can size the frame to its content: no script runs in it (sandbox and CSP).
    assert 'sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox"' in page
    assert "allow-scripts" not in page
    assert "Show images" in page and "tracker.example" not in page
    body = client.get(f"/spaces/TEAM/mail/messages/{message_id}/body")
    html = body.get_data(as_text=True)
    csp = body.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script" not in csp and "https:" not in csp
    assert "alert" not in html and "<script" not in html and "onclick" not in html and "tracker.example" not in html
    shown = client.get(f"/spaces/TEAM/mail/messages/{message_id}/body?images=1")
    assert "https://tracker.example/p.gif" in shown.get_data(as_text=True)
    assert "img-src data: http://localhost https: http:" in shown.headers["Content-Security-Policy"]


RISKY = [
    ("page.html", "text/html", "application/octet-stream"),
    ("logo.svg", "image/svg+xml", "application/octet-stream"),
    ("data.xml", "application/xml", "application/octet-stream"),
    ("report.pdf", "application/pdf", "application/pdf"),
]


@pytest.mark.parametrize("name, ctype, served_as", RISKY)
def test_attachments_always_download_and_risky_types_become_octet_stream(client, reader, db, name, ctype, served_as):
    raw = (b"From: a@example.org\r\nSubject: files\r\nMessage-ID: <f@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: " + ctype.encode() +
           b"\r\nContent-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n")
    message_id = store(reader, raw)
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
    index = re.search(r"/parts/(\d+)", page).group(1)
    response = client.get(f"/spaces/TEAM/mail/messages/{message_id}/parts/{index}")
    assert response.headers["Content-Type"].startswith(served_as)
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")


def test_attachment_names_are_cleaned(client, reader, db):
    raw = (b"From: a@example.org\r\nSubject: names\r\nMessage-ID: <names@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename*=utf-8''" +
           "%2E%2E%2Fetc%2Fna%E2%80%AEme%C3%A4.exe".encode() + b"\r\n\r\ndata\r\n--b--\r\n")
    message_id = store(reader, raw)
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
    index = re.search(r"/parts/(\d+)", page).group(1)
    disposition = client.get(f"/spaces/TEAM/mail/messages/{message_id}/parts/{index}").headers["Content-Disposition"]
    assert "\u202e" not in disposition and "%E2%80%AE" not in disposition and ".." not in disposition
    assert "filename*=UTF-8''name%C3%A4.exe" in disposition  # path parts and the RTL override are gone


def test_source_eml_and_streamed_mbox(client, reader, db):
    raws = [make_message(1, subject="From the start"), make_message(2, subject="Second"),
            make_message(60 * 24 * 40, subject="Later")]
    raws[0] = raws[0].replace(b"\r\n\r\n", b"\r\n\r\nFrom here on, a line that starts with From\r\n", 1)
    ids = [store(reader, raw) for raw in raws]
    db.session.commit()
    source = client.get(f"/spaces/TEAM/mail/messages/{ids[0]}/source")
    assert source.headers["Content-Type"].startswith("text/plain") and "From the start" in source.get_data(as_text=True)
    eml = client.get(f"/spaces/TEAM/mail/messages/{ids[0]}/message.eml")
    assert eml.get_data() == raws[0] and eml.headers["Content-Disposition"].startswith("attachment")
    whole = client.get("/spaces/TEAM/mail/export.mbox")
    assert whole.is_streamed
    path = client.application.instance_path + "/test.mbox"
    with open(path, "wb") as f:
        f.write(whole.get_data())
    box = mailbox.mbox(path)
    try:
        messages = list(box)
    finally:
        box.close()
    assert sorted(m["Subject"] for m in messages) == ["From the start", "Later", "Second"]
    first = next(m for m in messages if m["Subject"] == "From the start")
    assert "From here on, a line that starts with From" in first.get_payload()
    jan = client.get("/spaces/TEAM/mail/export.mbox?month=2026-01").get_data()
    assert jan.count(b"\nFrom ") + jan.startswith(b"From ") == 2
