"""Fidelity on mail nobody here wrote: CPython's own email test messages (Debian's libpython3.11-testsuite, which
./scripts/test installs). Every message parses; subject, sender, date, Message-ID, attachment names and body
presence agree with email.policy.default, except where listed below with why Spacemail's reading is right.
Then the whole corpus goes through an mbox export and import byte for byte, and a second import adds nothing."""
import email
import email.policy
import hashlib
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.archive.test_real_world_mail import SAMPLES
from webapp.archive import ingest
from webapp.archive.models import Message, MessageRaw
from webapp.archive.parse import parse
from webapp.spaces.services import create_site_space

CORPUS = Path("/usr/lib/python3.11/test/test_email/data")
LIMIT = 25 * 1024 * 1024

# "From: bbb@ddd.com (John X. Doe)": the old comment form. Mail clients show the comment as the sender's name;
# policy.default leaves the display name empty.
NAME_FROM_COMMENT = {"msg_01.txt", "msg_03.txt", "msg_04.txt", "msg_06.txt", "msg_14.txt", "msg_20.txt",
                     "msg_27.txt", "msg_29.txt", "msg_44.txt"}
# "From: MAILER DAEMON <>": the null sender; policy.default gives the address as "<>", Spacemail as none.
NULL_SENDER = {"msg_43.txt"}
# The text of an attached message (message/rfc822) or of a digest's messages is indexed, so search finds it;
# get_body() finds no body of the outer message.
TEXT_OF_ATTACHED_MESSAGES = {"msg_11.txt", "msg_28.txt", "msg_30.txt", "msg_46.txt"}


def corpus() -> list[Path]:
    assert CORPUS.is_dir(), "CPython's email test messages are missing: run ./scripts/test (libpython3.11-testsuite)"
    return sorted(CORPUS.glob("msg_*.txt"))


def reference(raw: bytes):
    """What email.policy.default reads, or None where it raises."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        sender = msg["From"].addresses[0] if msg["From"] and msg["From"].addresses else None
        body = msg.get_body(("plain", "html"))
        return {"subject": " ".join(str(msg.get("Subject") or "").split()), "sender": sender,
                "date": msg["Date"].datetime if msg["Date"] else None,
                "message_id": str(msg.get("Message-ID") or "").strip().strip("<>") or None,
                "names": sorted(n for n in (p.get_filename() for p in msg.iter_attachments()) if n)
                if msg.is_multipart() else [],
                "body": bool(body is not None and body.get_content().strip())}
    except Exception:
        return None


def test_the_corpus_is_there_and_large_enough():
    assert len(corpus()) >= 40


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_each_message_reads_as_policy_default_reads_it(path):
    raw = path.read_bytes()
    ours = parse(raw, LIMIT)
    assert ours.problem is None, f"{path.name} was not parsed: {ours.problem}"
    ref = reference(raw)
    if ref is None:
        return  # policy.default raises on it; ours parsed it (asserted above)
    assert " ".join(ours.subject.split()) == ref["subject"]
    if ref["sender"] is not None:
        if path.name in NULL_SENDER:
            assert ref["sender"].addr_spec == "<>" and ours.from_addr == ""
        else:
            assert ours.from_addr == ref["sender"].addr_spec.lower()
        if path.name in NAME_FROM_COMMENT:
            assert ref["sender"].display_name == "" and ours.from_name and f"({ours.from_name})" in \
                raw.decode("latin-1").replace("\n ", " ")
        elif path.name not in NULL_SENDER:
            assert ours.from_name == ref["sender"].display_name
    if ref["date"] is not None and ours.date is not None:
        assert abs((ours.date - ref["date"]).total_seconds()) < 1
    assert (ours.date is None) == (ref["date"] is None)
    assert ours.message_id == ref["message_id"]
    assert sorted(a["name"] for a in ours.attachments if a["name"] not in ("attachment", "attachment.txt")) \
        == ref["names"] or path.name == "msg_13.txt"  # (policy.default finds no name for msg_13's GIF; see below)
    if path.name in TEXT_OF_ATTACHED_MESSAGES:
        assert not ref["body"] and ours.text.strip()
    else:
        assert bool(ours.text.strip()) == ref["body"]


def test_msg_13_gif_name_comes_from_its_content_type():
    """policy.default's iter_attachments() gives the GIF no name; its Content-Type says name="dingusfish.gif",
    which is what a reader sees."""
    raw = (CORPUS / "msg_13.txt").read_bytes()
    assert b'name="dingusfish.gif"' in raw
    assert [a["name"] for a in parse(raw, LIMIT).attachments] == ["dingusfish.gif"]


def test_the_corpus_round_trips_through_an_mbox_export_and_import(app, db, make_user, login, client, run_jobs):
    admin = make_user("ann")
    source = create_site_space(admin, "SRC", "Source")
    target = create_site_space(admin, "DST", "Copy")
    db.session.commit()
    login(admin)
    raws = [p.read_bytes() for p in corpus()] + SAMPLES
    ingest.store_batch(source.id, None, raws)
    db.session.commit()
    held = sorted(hashlib.sha256(r).hexdigest() for r in db.session.scalars(
        select(MessageRaw.raw).join(Message).where(Message.space_id == source.id)))
    exported = client.get("/spaces/SRC/mail/export.mbox").get_data()
    for _ in range(2):
        response = client.post("/spaces/DST/mail/import", data={"files": (io.BytesIO(exported), "src.mbox")},
                               headers={"HX-Request": "true"})
        assert response.status_code == 200
        run_jobs()
    copied = sorted(hashlib.sha256(r).hexdigest() for r in db.session.scalars(
        select(MessageRaw.raw).join(Message).where(Message.space_id == target.id)))
    assert copied == held
    assert db.session.scalar(select(func.count(Message.id)).where(Message.space_id == target.id)) == len(held)
