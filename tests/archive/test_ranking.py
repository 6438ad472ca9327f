"""SQLite's Best match scores as FTS5's bm25() does, without its count of the whole index: the same figures on a
site within the rarity sample, and for one word the same order whatever the sample."""
import math
import random
from pathlib import Path

import pytest

from webapp.archive import ingest, search
from webapp.spaces.services import create_site_space

pytestmark = pytest.mark.sqlite_only
# Real mails (CPython's own email tests, Debian's libpython3.11-testsuite, installed by scripts/test).
EMAIL_TEST_DATA = Path("/usr/lib/python3.11/test/test_email/data")
VOCABULARY = ["budget", "printer", "deploy", "review", "monday", "numbers", "floor", "jammed", "release", "notes"]


def raw(key: str, subject: str, sender: str, body: str) -> bytes:
    return (f"From: {sender} <{sender.lower()}@example.org>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{key}@example.org>\r\nDate: Mon, 5 Jan 2026 10:{len(key) % 60:02d}:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


@pytest.fixture
def archive(app, db, make_user):
    """Real mails and made-up ones (words of known frequency in every column) in one space."""
    if not EMAIL_TEST_DATA.is_dir():
        pytest.fail(f"{EMAIL_TEST_DATA} is missing: scripts/test installs it (libpython3.11-testsuite)")
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    db.session.commit()
    for path in sorted(EMAIL_TEST_DATA.glob("msg_*.txt")):
        ingest.store(space.id, None, path.read_bytes())
    rng = random.Random(20)
    for i in range(120):
        words = lambda n: " ".join(rng.choice(VOCABULARY[:rng.randint(1, 10)]) for _ in range(n))  # noqa: E731
        ingest.store(space.id, None, raw(f"m{i}", words(rng.randint(1, 4)), words(1).title(),
                                         words(rng.randint(3, 200))))
    db.session.commit()
    return space


def fts5_bm25(query: search.TextQuery, expanded=None) -> dict[int, float]:
    """FTS5's own bm25() of every match (negated: higher is better)."""
    return {key: -score for key, score in search._all(
        "SELECT rowid, bm25(search_messages, 5.0, 3.0, 1.0) FROM search_messages WHERE search_messages MATCH :q",
        {"q": search.fts5_query(query, expanded)})}


QUERIES = ["budget", "the", "python", "mailman", "printer jammed", "release notes monday", "message", "floor",
           search.TextQuery(subject=[search.Term("word", "review")]),
           search.TextQuery(sender=[search.Term("word", "deploy")], terms=[search.Term("word", "numbers")]),
           "budg*", "rev* floor", "mon*"]


def as_query(q) -> search.TextQuery:
    return q if isinstance(q, search.TextQuery) else search.TextQuery(terms=search.parse_query(q))


def test_the_scores_are_fts5s_on_a_site_within_the_sample(archive, db):
    checked = 0
    for q in map(as_query, QUERIES):
        expanded = search.prefix_words(q)
        theirs = fts5_bm25(q, expanded)
        ours = search.bm25_scores(list(theirs), q, expanded)
        assert len(theirs) > 0, q
        for key, score in theirs.items():
            assert math.isclose(ours[key], score, rel_tol=1e-9, abs_tol=1e-12), (q, key)
        checked += len(theirs)
    assert checked > 500


def test_one_words_order_is_fts5s_whatever_the_sample(archive, db, monkeypatch):
    monkeypatch.setattr(search, "IDF_SAMPLE", 40)  # far fewer than the archive holds: rarity is estimated
    for word in ("budget", "the", "printer", "message"):
        q = as_query(word)
        theirs = fts5_bm25(q)
        ours = search.bm25_scores(list(theirs), q)
        assert sorted(theirs, key=lambda k: (-theirs[k], -k)) == sorted(ours, key=lambda k: (-ours[k], -k)), word


def test_best_match_is_fts5s_order_among_the_newest_matches(archive):
    for q in ("budget review", "the message", "printer"):
        theirs = fts5_bm25(as_query(q))
        newest = sorted(theirs, reverse=True)[:search.RANKED_AMONG]
        expected = sorted(newest, key=lambda k: (-theirs[k], -k))[:20]
        assert [h.message_id for h in search.search(archive.id, q, order="relevance", limit=20)] == \
            [k & search.ID_MASK for k in expected], q


def test_the_words_are_counted_as_the_index_cut_them(archive):
    """Each column's word count, as the ranking cuts the text, is FTS5's own (its sizes table), real mail included."""
    sizes = {key & search.ID_MASK: sz for key, sz in search._all("SELECT id, sz FROM search_messages_docsize", {})}
    rows = search._all("SELECT id, subject, from_name, from_addr, body_text FROM archive_messages", {})
    assert len(rows) > 150
    for message_id, subject, from_name, from_addr, body in rows:
        columns = search.indexed_text({"subject": subject, "from_name": from_name, "from_addr": from_addr,
                                       "body_text": body})
        assert [len(search.ranking_words(c)) for c in columns] == search._varints(sizes[message_id]), message_id
