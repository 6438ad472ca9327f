"""Hostile mail is archived raw and never stops a fetch or blows up the worker's memory."""
import hashlib

import pytest
from sqlalchemy import select

from tests.archive.helpers import team_with_account
from tests.archive.test_crash_safety import runner_env, start_runner
from webapp.archive.models import Message, MessageRaw
from webapp.archive.parse import parse


def nested(depth: int) -> bytes:
    head = b"From: deep@example.org\r\nSubject: nested\r\nMessage-ID: <nested@example.org>\r\n"
    body = b"innermost\r\n"
    for level in range(depth):
        b = b"b%d" % level
        body = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body +
                b"\r\n--" + b + b"--\r\n")
    return head + body


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
    return (b"From: parts@example.org\r\nSubject: many parts\r\nMessage-ID: <parts@example.org>\r\n"
            b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n")


HOSTILE = {
    "nesting 1000 deep": nested(1000),
    "100,000 parts": many_parts(100_000),
    "200 KB subject": b"From: long@example.org\r\nSubject: " + b"A" * 200_000 + b"\r\n\r\nbody\r\n",
    "unknown charset": (b"From: cs@example.org\r\nSubject: charset\r\nMessage-ID: <cs@example.org>\r\n"
                        b"Content-Type: text/plain; charset=x-klingon-9\r\n\r\nQapla\xff\xfe\r\n"),
    "multipart without boundary": (b"From: nb@example.org\r\nSubject: no boundary\r\nMessage-ID: <nb@example.org>\r\n"
                                   b"Content-Type: multipart/mixed\r\n\r\n--x\r\nhello\r\n--x--\r\n"),
    "8-bit garbage headers": (b"From: \xff\xfe\x80 <g@example.org>\r\nSubject: \xc3\x28\xa0\xa1 =?bogus?Q?x?=\r\n"
                              b"Message-ID: <[weird]@host>\r\nDate: yesterday-ish\r\n"
                              b"Content-Type: text/plain; name*=utf-8''%E2%28broken\r\n\r\nbody\r\n"),
    "broken RFC 2231 filename": (b"From: a@example.org\r\nSubject: att\r\nMessage-ID: <att@example.org>\r\n"
                                 b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
                                 b"Content-Type: application/octet-stream; name*0*=utf-8''%E2%82; name*1*=%ZZ\r\n"
                                 b"Content-Disposition: attachment; filename*=bogus''x\r\n\r\ndata\r\n--q--\r\n"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_parser_never_raises_and_stays_within_limits(name):
    parsed = parse(HOSTILE[name], 25 * 1024 * 1024)
    assert parsed.sha256 == hashlib.sha256(HOSTILE[name]).hexdigest()
    assert len(parsed.subject) <= 2000


def test_hostile_mailbox_is_archived_raw_and_the_fetch_finishes(app, db, make_user, dovecot, tmp_path):
    _, space, account, user = team_with_account(make_user, dovecot, "imaps")
    dovecot.deliver(user, list(HOSTILE.values()))
    runner = start_runner(account.id, runner_env(app, tmp_path))
    out, err = runner.communicate(timeout=300)
    assert runner.returncode == 0, err[-3000:]
    state, error, fetched, deleted, peak_kb = out.splitlines()[-1].split()
    assert (state, int(fetched), int(deleted)) == ("done", len(HOSTILE), len(HOSTILE))
    assert int(peak_kb) < 300 * 1024, f"worker peaked at {int(peak_kb) // 1024} MB"
    stored = {hashlib.sha256(raw).hexdigest() for raw in db.session.scalars(select(MessageRaw.raw))}
    assert stored == {hashlib.sha256(m).hexdigest() for m in HOSTILE.values()}
    problems = dict(db.session.execute(select(Message.subject, Message.parse_problem)).all())
    assert problems["nested"] and "levels" in problems["nested"]
    assert problems["many parts"] and "parts" in problems["many parts"]
    assert any(p and "100 KB" in p for p in problems.values())  # the 200 KB subject
    assert dovecot.mailbox_files(user) == []
