"""Threads from In-Reply-To/References in any arrival order; subject only for mail with neither header."""
import itertools

import pytest
from sqlalchemy import select

from webapp.archive import ingest, reading
from webapp.archive.models import Message, Thread
from webapp.spaces.services import create_site_space


def mail(msgid, subject="Plan", reply_to=None, refs=(), minute=0) -> bytes:
    headers = [f"From: a@example.org", f"Subject: {subject}", f"Date: Mon, 5 Jan 2026 10:{minute:02d}:00 +0000"]
    if msgid:
        headers.append(f"Message-ID: <{msgid}>")
    if reply_to:
        headers.append(f"In-Reply-To: <{reply_to}>")
    if refs:
        headers.append("References: " + " ".join(f"<{r}>" for r in refs))
    return ("\r\n".join(headers) + f"\r\n\r\nbody of {msgid}\r\n").encode()


@pytest.fixture
def space(app, db, make_user):
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    db.session.commit()
    return space


def by_msgid(db, msgid) -> Message:
    return db.session.scalar(select(Message).where(Message.message_id_header == msgid))


CHAIN = [mail("a@x", minute=0), mail("b@x", "Re: Plan", "a@x", ["a@x"], 1),
         mail("c@x", "Re: Plan", "b@x", ["a@x", "b@x"], 2), mail("d@x", "Re: Plan", "a@x", ["a@x"], 3)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_any_arrival_order_gives_the_same_tree(space, db, order):
    for i in order:
        ingest.store(space.id, None, CHAIN[i])
    db.session.commit()
    a, b, c, d = (by_msgid(db, x) for x in ("a@x", "b@x", "c@x", "d@x"))
    assert len({a.thread_id, b.thread_id, c.thread_id, d.thread_id}) == 1
    assert (a.parent_id, b.parent_id, c.parent_id, d.parent_id) == (None, a.id, b.id, a.id)
    threads = db.session.scalars(select(Thread).where(Thread.message_count > 0)).all()
    assert len(threads) == 1 and threads[0].message_count == 4
    tree = [(m.message_id_header, depth) for m, depth in reading.thread_tree(threads[0])]
    assert tree == [("a@x", 0), ("b@x", 1), ("c@x", 2), ("d@x", 1)]


def test_missing_parent_keeps_replies_together_under_the_reference(space, db):
    ingest.store(space.id, None, mail("r1@x", "Re: Lost", "gone@x", ["root@x", "gone@x"]))
    ingest.store(space.id, None, mail("r2@x", "Re: Lost", "root@x", ["root@x"]))
    db.session.commit()
    assert by_msgid(db, "r1@x").thread_id == by_msgid(db, "r2@x").thread_id  # both name root@x (a placeholder)
    ingest.store(space.id, None, mail("root@x", "Lost"))
    db.session.commit()
    root, r1, r2 = (by_msgid(db, x) for x in ("root@x", "r1@x", "r2@x"))
    assert root.thread_id == r1.thread_id == r2.thread_id
    assert r2.parent_id == root.id
    assert db.session.get(Thread, root.thread_id).message_count == 3


def test_a_references_loop_makes_no_cycle(space, db):
    ingest.store(space.id, None, mail("x@x", "Loop", "y@x", ["y@x"]))
    ingest.store(space.id, None, mail("y@x", "Re: Loop", "x@x", ["x@x"]))
    db.session.commit()
    x, y = by_msgid(db, "x@x"), by_msgid(db, "y@x")
    assert x.thread_id == y.thread_id
    assert not (x.parent_id == y.id and y.parent_id == x.id)
    thread = db.session.get(Thread, x.thread_id)
    assert sorted(m.message_id_header for m, _ in reading.thread_tree(thread)) == ["x@x", "y@x"]


def test_duplicate_message_ids_are_both_archived(space, db):
    ingest.store(space.id, None, mail("same@x", "First"))
    ingest.store(space.id, None, mail("same@x", "Second, other bytes"))
    ingest.store(space.id, None, mail("reply@x", "Re: First", "same@x", ["same@x"]))
    db.session.commit()
    assert db.session.scalar(select(Message).where(Message.subject == "Second, other bytes")) is not None
    reply = by_msgid(db, "reply@x")
    assert reply.parent_id is not None and reply.thread_id == db.session.get(Message, reply.parent_id).thread_id


def test_subject_fallback_only_without_threading_headers(space, db):
    ingest.store(space.id, None, mail("s1@x", "Coffee machine"))
    ingest.store(space.id, None, mail(None, "Re: Coffee machine"))  # neither header: subject decides
    ingest.store(space.id, None, mail("s3@x", "Coffee machine"))  # has a Message-ID, no reply prefix: its own
    db.session.commit()
    s1 = by_msgid(db, "s1@x")
    fallback = db.session.scalar(select(Message).where(Message.message_id_header.is_(None)))
    assert fallback.thread_id == s1.thread_id
    assert by_msgid(db, "s3@x").thread_id != s1.thread_id


def test_batches_thread_like_one_message_at_a_time(app, db, make_user):
    """A fetch stores a batch in one go: the same threads, counts and dates as storing one at a time, shuffled."""
    import random
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    import corpus

    raws = list(corpus.generate(300, 11))
    random.Random(3).shuffle(raws)
    raws += raws[:10]  # the same bytes again, within and across batches
    owner = make_user("bo")
    single, batched = create_site_space(owner, "ONE", "One"), create_site_space(owner, "MANY", "Many")
    db.session.commit()
    for raw in raws:
        ingest.store(single.id, None, raw)
    for start in range(0, len(raws), 40):
        ingest.store_batch(batched.id, None, raws[start:start + 40])
    db.session.commit()

    def shape(space):
        messages = db.session.scalars(select(Message).where(Message.space_id == space.id)).all()
        threads = db.session.scalars(select(Thread).where(Thread.space_id == space.id)).all()
        groups = {}
        for m in messages:
            groups.setdefault(m.thread_id, set()).add(m.sha256)
        by_id = {m.id: m for m in messages}
        for m in messages:  # a parent is in the same thread, and one the message names
            if m.parent_id:
                parent = by_id[m.parent_id]
                assert parent.thread_id == m.thread_id
        for t in threads:  # no empty threads; counts and newest dates right
            members = [m for m in messages if m.thread_id == t.id]
            assert t.message_count == len(members) > 0
            assert t.last_date == max(m.date for m in members)
        return len(messages), sorted(tuple(sorted(g)) for g in groups.values())

    assert shape(batched) == shape(single)
    assert shape(single)[0] == 300
