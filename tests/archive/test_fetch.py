"""Fetching from real Dovecot over all four protocols: raw bytes kept exactly, server emptied, nothing twice."""
import hashlib

import pytest
from sqlalchemy import func, select

from tests.archive.helpers import message, mixed_mailbox, team_with_account
from webapp.archive import services
from webapp.archive.models import FetchRun, Message, MessageRaw, SeenMessage, Thread
from webapp.extensions import db


def fetch_once(account, run_jobs, trigger="manual") -> FetchRun:
    run = services.queue_account_fetch(account, trigger)
    db.session.commit()
    run_jobs()
    return db.session.get(FetchRun, run.id)


def archived_hashes(space) -> list[str]:
    return sorted(hashlib.sha256(raw).hexdigest() for raw in db.session.scalars(
        select(MessageRaw.raw).join(Message).where(Message.space_id == space.id)))


@pytest.mark.parametrize("protocol", ["imap", "imaps", "pop", "pops"])
def test_fetch_keeps_raw_bytes_and_empties_the_server(app, make_user, dovecot, run_jobs, protocol):
    _, space, account, user = team_with_account(make_user, dovecot, protocol)
    originals = mixed_mailbox()
    dovecot.deliver(user, originals)

    run = fetch_once(account, run_jobs)
    assert (run.state, run.error_message) == ("done", None)
    assert (run.total, run.fetched, run.deleted) == (5, 5, 5)
    assert archived_hashes(space) == sorted(hashlib.sha256(m).hexdigest() for m in originals)
    assert dovecot.mailbox_files(user) == []

    umlaut = db.session.scalar(select(Message).where(Message.message_id_header == "umlaut@example.de"))
    assert (umlaut.from_name, umlaut.subject) == ("Jürgen Müller", "Grüße aus München")
    assert "Schöne Grüße" in umlaut.body_text
    with_attachment = db.session.scalar(select(Message).where(Message.message_id_header == "m3@example.org"))
    assert with_attachment.has_attachments and with_attachment.attachments[0]["name"] == "report.pdf"
    reply = db.session.scalar(select(Message).where(Message.message_id_header == "m4@example.org"))
    first = db.session.scalar(select(Message).where(Message.message_id_header == "m1@example.org"))
    assert reply.thread_id == first.thread_id and reply.parent_id == first.id
    assert db.session.get(Thread, first.thread_id).message_count == 2

    again = fetch_once(account, run_jobs)
    assert (again.state, again.total, again.fetched) == ("done", 0, 0)
    assert db.session.scalar(select(func.count(Message.id))) == 5


@pytest.mark.parametrize("protocol", ["imaps", "pops"])
def test_keep_on_server_remembers_what_was_fetched(app, make_user, dovecot, run_jobs, protocol):
    _, space, account, user = team_with_account(make_user, dovecot, protocol, keep_on_server=True)
    dovecot.deliver(user, [message(i) for i in range(3)])
    run = fetch_once(account, run_jobs)
    assert (run.fetched, run.deleted) == (3, 0)
    assert len(dovecot.mailbox_files(user)) == 3
    dovecot.deliver(user, [message(10)])
    run = fetch_once(account, run_jobs)
    assert (run.total, run.fetched, run.duplicates) == (4, 1, 0)
    assert db.session.scalar(select(func.count(Message.id))) == 4


def test_the_same_message_in_two_accounts_is_archived_once(app, make_user, dovecot, run_jobs):
    _, space, account, user = team_with_account(make_user, dovecot, "imaps")
    from tests.archive.helpers import account_data

    other_user, other_pw = dovecot.add_user()
    second = services.create_account(space, account_data(dovecot, "pops", other_user, other_pw, name="second"))
    db.session.commit()
    dovecot.deliver(user, [message(1)])
    dovecot.deliver(other_user, [message(1)])
    fetch_once(account, run_jobs)
    run = fetch_once(second, run_jobs)
    assert (run.fetched, run.duplicates, run.deleted) == (0, 1, 1)
    assert db.session.scalar(select(func.count(Message.id))) == 1
    assert db.session.scalar(select(func.count(SeenMessage.id))) == 2


def test_fetch_resumes_deletion_after_a_crash_between_commit_and_delete(app, make_user, dovecot, run_jobs):
    """Archived but not yet removed (the worker died after the commit): the next fetch only deletes."""
    _, space, account, user = team_with_account(make_user, dovecot, "pops", keep_on_server=True)
    dovecot.deliver(user, [message(i) for i in range(4)])
    fetch_once(account, run_jobs)
    account.keep_on_server = False
    db.session.commit()
    run = fetch_once(account, run_jobs)
    assert (run.fetched, run.deleted) == (0, 4)
    assert dovecot.mailbox_files(user) == []


def test_a_large_message_is_archived_byte_for_byte(app, make_user, dovecot, run_jobs):
    """Over a megabyte the raw bytes are streamed into SQLite in chunks (PostgreSQL takes them whole)."""
    import base64
    import os

    _, space, account, user = team_with_account(make_user, dovecot, "imaps")
    blob = base64.encodebytes(os.urandom(2_700_000)).replace(b"\n", b"\r\n")
    large = (b"From: big@example.org\r\nSubject: Scans\r\nMessage-ID: <big@example.org>\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n"
             b"--b\r\nContent-Type: application/pdf; name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + blob + b"--b--\r\n")
    originals = [message(1), large, message(2)]
    dovecot.deliver(user, originals)
    run = fetch_once(account, run_jobs)
    assert (run.state, run.fetched, run.deleted) == ("done", 3, 3)
    assert archived_hashes(space) == sorted(hashlib.sha256(m).hexdigest() for m in originals)
    stored = db.session.scalar(select(Message).where(Message.message_id_header == "big@example.org"))
    assert stored.size == len(large) > 3_000_000 and stored.attachments[0]["name"] == "scan.pdf"
