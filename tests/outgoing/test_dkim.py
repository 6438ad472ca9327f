"""DKIM: a generated key signs what the sender sends; dkimpy verifies it against the record the page shows."""
import dkim

from tests.outgoing.helpers import add_server
from webapp.extensions import db
from webapp.outgoing import delivery, queue
from webapp.outgoing.models import DkimKey


def record_from_page(page: str) -> tuple[str, str]:
    name = page.split("<strong>Name</strong> <code>")[1].split("</code>")[0]
    value = page.split("<strong>Value</strong> <code class=\"wrap\">")[1].split("</code>")[0]
    return name, value


def test_a_generated_key_signs_every_mail_and_a_changed_header_fails(app, client, make_user, login, sinks):
    login(make_user("root", admin=True))
    bad = client.post("/admin/mail-servers/dkim", data={"domain": "not a domain", "selector": "s1"})
    assert "is not a domain name" in bad.get_data(as_text=True) and db.session.scalar(db.select(DkimKey)) is None
    page = client.post("/admin/mail-servers/dkim", data={"domain": "Example.org", "selector": "spacemail2026"},
                       follow_redirects=True).get_data(as_text=True)
    name, value = record_from_page(page)
    assert name == "spacemail2026._domainkey.example.org" and value.startswith("v=DKIM1; k=rsa; p=")
    assert "PRIVATE KEY" not in page and "BEGIN" not in db.session.scalar(db.select(DkimKey)).private_key_encrypted

    add_server(sinks, sinks.plain)  # From spacemail@example.org
    queue.queue_mail("reader@example.org", "Signed", "Hello")
    db.session.commit()
    delivery.deliver_due()
    (received,) = sinks.plain.messages
    dns = lambda qname, timeout=5: value.encode() if qname == (name + ".").encode() else None  # noqa: E731
    assert received.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(received.data, dnsfunc=dns)
    tampered = received.data.replace(b"Subject: [Spacemail] Signed", b"Subject: [Spacemail] Changed")
    assert tampered != received.data and not dkim.verify(tampered, dnsfunc=dns)

    key = db.session.scalar(db.select(DkimKey))
    client.post(f"/admin/mail-servers/dkim/{key.id}/disable")
    queue.queue_mail("reader@example.org", "Unsigned", "Hello")
    db.session.commit()
    delivery.deliver_due()
    assert not sinks.plain.messages[-1].data.startswith(b"DKIM-Signature:")
