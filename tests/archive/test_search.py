"""One search() on SQLite FTS5 and PostgreSQL tsvector: the same messages for the same queries.

The whole suite runs on both databases, so every expectation here holds for both engines."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.archive import ingest, read_routes, search
from webapp.archive.models import Message
from webapp.spaces.services import create_site_space

DOCS = {
    "budget": ("Quarterly budget", "Ann", "The budget review is on Monday. Bring the numbers."),
    "gruesse": ("Grüße aus München", "Jürgen", "Schöne Grüße und bis bald im Büro"),
    "cafe": ("Naïve café order", "Zoë", "Two flat whites for the naïve café crowd"),
    "ops": ("AND NEAR( operators", "Bob", 'He typed "budget" AND NEAR( and * into the box'),
    "deploy": ("Deploy plan", "Cleo", "Deployment deploys deployed; budgetary notes follow"),
    "printer": ("Printer", "Dan", "The printer on floor two is jammed again"),
}


def raw(key, subject, sender, body) -> bytes:
    return (f"From: {sender} <{sender.lower()}@example.org>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{key}@example.org>\r\nDate: Mon, 5 Jan 2026 10:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def spaces(db, make_user, *keys: str) -> list:
    """Ann, and a site space of hers for each key ("TEAM" -> "Team"), committed: [ann, *spaces]."""
    admin = make_user("ann")
    made = [create_site_space(admin, key, key.title()) for key in keys]
    db.session.commit()
    return [admin, *made]


@pytest.fixture
def indexed(app, db, make_user):
    _admin, space, other = spaces(db, make_user, "TEAM", "OTHER")
    ids = {}
    for key, (subject, sender, body) in DOCS.items():
        ids[key], _ = ingest.store(space.id, None, raw(key, subject, sender, body))
    ingest.store(other.id, None, raw("secret", "Secret budget", "Eve", "budget of another space"))
    db.session.commit()
    return space, {v: k for k, v in ids.items()}


def found(space, keys_by_id, query, **kw) -> set[str]:
    return {keys_by_id[h.message_id] for h in search.search(space.id, query, **kw)}


@pytest.mark.parametrize("query, expected", [
    ("budget", {"budget", "ops"}),
    ("BUDGET review", {"budget"}),
    ("grüße", {"gruesse"}),
    ("GRÜSSE", set()),  # no stemming or folding of ß to ss on either engine
    ("münchen", {"gruesse"}),
    ("naïve", {"cafe"}),
    ("cafe", {"cafe"}),  # diacritics are ignored on both engines (issue 16)
    ("naive", {"cafe"}),
    ('"flat whites"', {"cafe"}),
    ('"whites flat"', set()),
    ("deploy*", {"deploy"}),
    ("budg*", {"budget", "ops", "deploy"}),
    ("AND", {"ops"}),
    ("NEAR(", {"ops"}),
    ('"', set()),
    ("*", set()),
    ('budget" OR "printer', set()),  # quotes cannot open an OR: budget, OR and printer are all required
    ("printer OR budget", set()),
    ("jürgen", {"gruesse"}),
    ("zoë@example.org", {"cafe"}),
    ("", set()),
])
def test_same_results_on_both_engines(indexed, query, expected):
    space, keys = indexed
    assert found(space, keys, query) == expected
    assert found(space, keys, query, order="relevance") == expected


def test_other_spaces_mail_never_appears(indexed):
    space, keys = indexed
    assert all(h.message_id in keys for h in search.search(space.id, "budget"))


def test_snippet_marks_the_words_and_escapes_the_mail(app, db, make_user):
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    message_id, _ = ingest.store(space.id, None, raw("x", "Hi", "Mallory",
                                                     "<script>alert(1)</script> the password is hunter2"))
    db.session.commit()
    hit = search.search(space.id, "password")[0]
    assert hit.message_id == message_id
    assert "<mark>password</mark>" in hit.snippet and "<script>" not in hit.snippet


def test_relevance_puts_subject_matches_first(indexed):
    space, keys = indexed
    hits = search.search(space.id, "printer", order="relevance")
    assert keys[hits[0].message_id] == "printer"


def test_deleted_mail_is_not_found(indexed, db):
    space, keys = indexed
    budget_id = next(i for i, k in keys.items() if k == "budget")
    from webapp.timeutil import utcnow

    db.session.get(Message, budget_id).deleted_at = utcnow()
    db.session.commit()
    assert found(space, keys, "budget") == {"ops"}


# PostgreSQL's three ways to the newest matches (search._pg_newest_ids), each made the cheapest in turn: the walk,
# a window of the space's newest mail (big enough, or too small so that all the matches are asked after it), all
# the GIN index's matches. SQLite's windows are set small in every case.
PG_WAYS = {
    "walk": {"WALK_COST": 0},
    "window": {"WALK_COST": 10**9, "HEAP_COST": 10**9, "EDGE_COST": 0, "WINDOW_ROWS": 3},
    "window too small": {"WALK_COST": 10**9, "HEAP_COST": 10**9, "EDGE_COST": 0, "WINDOW_ROWS": 0.05},
    "all matches": {"WALK_COST": 10**9, "HEAP_COST": 0},
}


@pytest.mark.parametrize("way", PG_WAYS)
def test_newest_first_is_exact_when_dates_do_not_follow_arrival(app, db, make_user, monkeypatch, way):
    """Newest-first looks in the space's newest messages first (a window): imported mail arrives out of date
    order, some messages are in the trash, another space shares the words; every page must still be exact, and
    Best match ranks the newest RANKED_AMONG matches, whichever way they were found."""
    import random
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select, text

    from webapp.timeutil import utcnow

    monkeypatch.setattr(search, "NEWEST_WINDOWS", (4, 15))
    monkeypatch.setattr(search, "RANKED_AMONG", 6)
    monkeypatch.setattr(search, "WALK", 3)
    for name, value in PG_WAYS[way].items():
        monkeypatch.setattr(search, name, value)
    postgres = db.engine.dialect.name == "postgresql"
    taken, edges = [], []
    if postgres:
        import psycopg

        newest_ids, execute = search._pg_newest_ids, psycopg.Connection.execute
        monkeypatch.setattr(search, "_pg_newest_ids", lambda *a: taken.append(newest_ids(*a)) or taken[-1])
        monkeypatch.setattr(psycopg.Connection, "execute", lambda self, sql, *a, **kw: (
            edges.append(sql) if "OFFSET %(skip)s" in sql else None, execute(self, sql, *a, **kw))[1])
    _admin, space, other = spaces(db, make_user, "TEAM", "OTHER")
    rnd = random.Random(4)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    for i in range(80):
        date = (start + timedelta(hours=rnd.randrange(2000))).strftime("%a, %d %b %Y %H:%M:%S +0000")
        body = ("alpha " if rnd.random() < 0.3 else "") + ("beta gamma" if rnd.random() < 0.5 else "delta")
        body += " omega" if i in (5, 40) else ""  # a rare word: fewer matches than the walk
        for target in (space, other) if i % 3 == 0 else (space,):
            ingest.store(target.id, None, (f"From: a@example.org\r\nSubject: m{i}\r\nMessage-ID: <{target.key}{i}@x>"
                                           f"\r\nDate: {date}\r\n\r\n{body}\r\n").encode())
    trashed = db.session.scalars(select(Message).where(Message.space_id == space.id).limit(10)).all()
    for message in trashed:
        message.deleted_at = utcnow()
    db.session.commit()
    if postgres:  # the planner's statistics, whose estimate of each query's share chooses the way
        db.session.execute(text("ANALYZE archive_messages"))
        db.session.commit()
    live = db.session.scalars(select(Message).where(Message.space_id == space.id, Message.deleted_at.is_(None))).all()
    for query, has in (("alpha", lambda b: "alpha" in b), ('"beta gamma"', lambda b: "beta gamma" in b),
                       ("gam*", lambda b: "gamma" in b), ("delta", lambda b: "delta" in b),
                       ("omega", lambda b: "omega" in b)):
        expected = [m.id for m in sorted((m for m in live if has(m.body_text)), key=lambda m: (m.date, m.id),
                                         reverse=True)]
        got, before = [], None
        while True:  # page through, 7 at a time, as the Mail tab's "more" does
            hits = search.search(space.id, query, limit=7, before=before)
            got += [h.message_id for h in hits]
            if len(hits) < 7:
                break
            last = db.session.get(Message, hits[-1].message_id)
            before = (last.date, last.id)
        assert got == expected, query
        best = [h.message_id for h in search.search(space.id, query, order="relevance", limit=5)]
        assert len(best) == min(5, len(expected)) and set(best) <= set(expected[:6]), query
    if postgres:  # the way asked for was the way taken
        assert taken and all((ids is None) == (way == "walk") for ids in taken)
        assert bool(edges) == way.startswith("window")


@pytest.mark.parametrize("query, hit", [
    ("example", True), ("build", True), ("server", True), ("build-server", True), ("server-build", False),
    ("candidate", True), ("release_candidate", True), ("v2", True), ("2026", True), ("buildserver", False),
    ("ops@build", True), ("serv*", True),
])
def test_words_are_cut_alike_on_both_engines(app, db, make_user, query, hit):
    """Punctuation splits words on both engines (PostgreSQL's own parser kept "build-server.example.com" and
    addresses whole, so "server" found nothing there but did on SQLite)."""
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    message_id, _ = ingest.store(space.id, None, raw(
        "w", "Deploy", "Ann", "Push to build-server.example.com (ops@build.example.com), release_candidate v2 2026"))
    db.session.commit()
    for order in ("newest", "relevance"):
        assert [h.message_id for h in search.search(space.id, query, order=order)] == ([message_id] if hit else [])


def test_best_match_in_a_space_whose_mail_came_before_another_spaces(app, db, make_user):
    """The newest matches by id are another space's: this space's own newest matches are ranked (found by its date
    index, not by reading every match of the word; that took 3-6 s at 1,000,000 messages)."""
    _admin, team, other = spaces(db, make_user, "TEAM", "OTHER")
    ingest.store(team.id, None, raw("best", "Budget", "Ann", "the budget"))
    for i in range(30):
        ingest.store(team.id, None, raw(f"t{i}", f"Note {i}", "Bob", "a note on the budget"))
    for i in range(600):  # archived later: the newest 500 matches by id are all OTHER's
        ingest.store(other.id, None, raw(f"o{i}", f"Other {i}", "Eve", "budget"))
    db.session.commit()
    hits = search.search(team.id, "budget", order="relevance", limit=5)
    assert len(hits) == 5
    assert db.session.get(Message, hits[0].message_id).subject == "Budget"  # the subject match ranks first


@pytest.mark.sqlite_only
@pytest.mark.parametrize("date", [
    "2026-01-05 10:00:00+00:00", "2026-01-05 10:00:00.999999+00:00", "2026-01-05 12:00:00+02:00",
    "1969-12-31 23:59:59.500000+00:00", "0001-01-01 00:00:00+00:00", "2106-02-07 06:28:15+00:00",
    "2200-01-01 00:00:00+00:00", "9999-12-31 23:59:59.999999+00:00",
])
def test_the_search_key_is_the_same_in_python_and_in_sql(app, db, make_user, date):
    """SQLite's index key is made in Python when mail is stored and in SQL when it is purged (and by migration
    0021): they must agree to the bit, for any date a mail may carry, or a purged message's words stay indexed."""
    from datetime import datetime

    from sqlalchemy import text

    if db.engine.dialect.name != "sqlite":
        pytest.skip("the key is SQLite's (PostgreSQL's vector is on the message row)")
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    message = Message(space_id=space.id, sha256="k" * 64, size=1, subject="s", date=datetime.fromisoformat(date))
    db.session.add(message)
    db.session.commit()
    in_sql = db.session.execute(text(f"SELECT {search.SQLITE_KEY} FROM archive_messages m WHERE m.id = :id"),
                                {"id": message.id}).scalar()
    assert in_sql == search.search_key(message.date, message.id)
    assert in_sql & search.ID_MASK == message.id


def test_newest_first_follows_the_date_to_the_second_across_the_keys_range(app, db, make_user):
    """Dates from before 1970 to after 2106 are kept in order as far as the key holds them (clamped at its ends)."""
    space = create_site_space(make_user("ann"), "TEAM", "Team")
    db.session.commit()
    dates = ["Thu, 1 Jan 1960 00:00:00 +0000", "Mon, 5 Jan 2026 10:00:00 +0000", "Mon, 5 Jan 2026 10:00:01 +0000",
             "Mon, 5 Jan 2026 12:00:00 +0300", "Sun, 1 Jan 2090 00:00:00 +0000"]
    ids = []
    for i, date in enumerate(dates):
        ids.append(ingest.store(space.id, None, (f"Subject: s{i}\r\nMessage-ID: <d{i}@x>\r\nDate: {date}\r\n\r\n"
                                                 "zeppelin\r\n").encode())[0])
    db.session.commit()
    expected = sorted(ids, key=lambda i: (db.session.get(Message, i).date, i), reverse=True)
    assert [h.message_id for h in search.search(space.id, "zeppelin")] == expected
    assert [ids[i] for i in (4, 2, 1, 3, 0)] == expected  # 12:00 +0300 is 09:00 UTC


_PIECES = ["alpha", "Alpha", "ALPHABET", "beta", "betamax", "ab", "x1", "2026", "foo_bar", "e-mail", "a.b", "_", "9"]


@settings(max_examples=400, deadline=None)
@given(words=st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from([" ", "  ", ", ", "\n", "-", "_", ". ", ""])),
                      max_size=90),
       query=st.lists(st.sampled_from(["alpha", "beta", "ab*", "bet*", "x1", "2026", "zzz", '"alpha beta"', "a"]),
                      min_size=1, max_size=3),
       width=st.sampled_from([24, 6, 3, 1]))
def test_a_snippet_of_ascii_text_is_the_one_read_word_by_word(words, query, width):
    """Snippets of ASCII text are cut around the first hit found by one expression (the fast path); they must be
    the snippets read a word at a time as FTS5 folds words (the path for other text), marks included."""
    text_ = " · ".join("".join(w + sep for w, sep in words[i:i + 30]) for i in range(0, len(words), 30))
    terms = search.parse_query(" ".join(query))
    found, prefixes, _ = search._query_words(tuple((t.kind, t.text) for t in terms))
    assert search.snippet(text_, terms, width, ascii_=True) == search._snippet_by_words(
        text_, set(found), list(prefixes), width)


def test_a_message_without_body_or_subject_text_still_has_a_snippet(app, db, make_user):
    """Old or odd rows may hold NULL where text is expected: the hit is shown, never an error."""
    from sqlalchemy import text

    space = create_site_space(make_user("ann"), "TEAM", "Team")
    db.session.commit()
    message_id, _ = ingest.store(space.id, None, raw("null", "Zeppelin", "Ann", "body"))
    db.session.commit()
    db.session.execute(text("UPDATE archive_messages SET body_text = NULL WHERE id = :id"), {"id": message_id})
    db.session.commit()
    hits = search.search(space.id, "zeppelin")
    assert [h.message_id for h in hits] == [message_id] and "<mark>Zeppelin</mark>" in hits[0].snippet


@pytest.mark.sqlite_only
def test_a_prefix_asked_as_the_words_it_starts_finds_what_fts5s_prefix_finds(app, db, make_user, monkeypatch):
    """SQLite asks FTS5 for a prefix's words (up to PREFIX_WORDS of them) instead of the prefix: the same mail."""
    import random

    _admin, team, other = spaces(db, make_user, "TEAM", "OTHER")
    rng = random.Random(5)
    words = ["pro", "Project", "projects", "proj2x", "prologue", "deploy", "deployed", "dePLOYS", "desk", "budget",
             "pröject", "pro_gram"] + [f"zz{i}" for i in range(80)]  # 80 words start with zz: more than 64
    for i in range(150):
        text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
        ingest.store((team if i % 5 else other).id, None, raw(f"p{i}", text(3), text(1).replace("_", ""), text(12)))
    db.session.commit()
    queries = ["pro*", "PROJ*", "proj*", "dep* pro*", "deploys*", "zz*", "zz1*", "pr*", "nothing*"]
    queries += [search.TextQuery(subject=[search.Term("prefix", "pro")], terms=[search.Term("prefix", "de")]),
                search.TextQuery(sender=[search.Term("prefix", "proj")], exclude=[search.Term("word", "desk")])]

    def hits(order):
        return [[h.message_id for h in search.search(team.id, q, order=order, limit=200)] for q in queries]

    with app.test_request_context():
        newest, best = hits("newest"), hits("relevance")
        monkeypatch.setattr(search, "prefix_words", lambda query: {})  # every prefix asked of FTS5 as a prefix
        assert hits("newest") == newest
        assert [sorted(h) for h in hits("relevance")] == [sorted(h) for h in best]
    assert all(newest[:5]) and newest[queries.index("nothing*")] == []  # the prefixes find mail, or none
    monkeypatch.undo()
    db.session.rollback()
    token = search._DRIVER.set(db.session.connection().connection.driver_connection)
    try:
        asked = search.prefix_words(search.TextQuery(terms=[search.Term("prefix", t) for t in ("Proj", "dé", "zz")]))
        monkeypatch.setattr(search, "PREFIX_WORDS", 64)
        small = search.prefix_words(search.TextQuery(terms=[search.Term("prefix", "zz")]))  # 150 messages: small
        monkeypatch.setattr(search, "SMALL_SITE", 100)
        with pytest.raises(search.PrefixTooBroad, match=r"“zz\*” starts more than 64 different words"):
            search.prefix_words(search.TextQuery(terms=[search.Term("prefix", "zz")]))
    finally:
        search._DRIVER.reset(token)
    assert asked["Proj"] == ["proj2x", "project", "projects"] and "dé" not in asked and len(asked["zz"]) == 80
    assert small == {"zz": None}  # a small site asks FTS5 for the prefix itself


@pytest.mark.sqlite_only
def test_a_prefix_that_starts_too_many_words_is_refused_beside_the_box(app, db, make_user, client, login, monkeypatch):
    admin, team = spaces(db, make_user, "TEAM")
    for i in range(12):
        ingest.store(team.id, None, raw(f"w{i}", f"Word zz{i}", "Ann", f"zz{i} and budget"))
    db.session.commit()
    login(admin)
    monkeypatch.setattr(search, "PREFIX_WORDS", 10)
    assert "Word zz3" in client.get("/spaces/TEAM/mail?q=zz*").get_data(as_text=True)  # a small site: asked as is
    monkeypatch.setattr(search, "SMALL_SITE", 5)
    read_routes._RENDERED.clear()  # (the list just rendered is kept a minute)
    page = client.get("/spaces/TEAM/mail?q=zz*")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "“zz*” starts more than 10 different words in the archive" in body
    assert "Word zz3" not in body
    assert "Word zz3" in client.get("/spaces/TEAM/mail?q=zz3*").get_data(as_text=True)


def _segments(db) -> int:
    """How many b-trees (segments) SQLite's search index holds: each has its rows in the %_idx table."""
    from sqlalchemy import text

    return db.session.execute(text("SELECT count(DISTINCT segid) FROM search_messages_idx")).scalar()


@pytest.mark.sqlite_only
def test_the_hourly_tidy_merges_the_search_index_and_every_search_finds_the_same(app, db, make_user, monkeypatch):
    """Each commit of new mail writes a segment of SQLite's index, and a search looks each word up in every one:
    the hourly job (workers/cron.py) merges them, a small step a transaction, and nothing found changes."""
    import random

    from workers.fetch import tidy_search_index

    _admin, team = spaces(db, make_user, "TEAM")
    rng = random.Random(11)
    words = ["budget", "printer", "deploy", "review", "lunch", "release", "invoice", "ticket", "server", "coffee"]
    for i in range(80):  # a commit each, as fetches of one message would: a segment each
        ingest.store(team.id, None, raw(f"m{i}", f"Note {i} {rng.choice(words)}", rng.choice(["Ann", "Bob"]),
                                        " ".join(rng.choices(words, k=12)) + f" only{i}"))
        db.session.commit()
    queries = ["budget", "printer lunch", "only7", "rev*", '"budget printer"', "ann", "coffee -ticket"]

    def answers():
        return {(q, order): [(h.message_id, str(h.snippet)) for h in search.search(team.id, q, order=order)]
                for q in queries for order in ("newest", "relevance")}

    before, segments_before = answers(), _segments(db)
    db.session.commit()
    monkeypatch.setattr(search, "MERGE_PAGES", 1)  # many small steps, each its own transaction
    tidy_search_index()
    assert segments_before > 4 and _segments(db) == 1
    assert answers() == before
    assert sum(len(hits) for hits in before.values()) > 100
    assert search.tidy_index() == 0  # nothing left to merge: the next hour's run does nothing


@pytest.mark.sqlite_only
def test_the_tidy_gives_way_to_a_writer_that_holds_the_lock_and_the_next_run_goes_on(app, db, make_user):
    import sqlite3

    from sqlalchemy import event

    _admin, team = spaces(db, make_user, "TEAM")
    for i in range(12):
        ingest.store(team.id, None, raw(f"m{i}", f"Note {i}", "Ann", f"budget line {i}"))
        db.session.commit()

    before = _segments(db)
    db.session.commit()
    db.engine.dispose()

    def short_wait(connection, _record):  # after the app's own 10 s: the test need not wait that long
        connection.execute("PRAGMA busy_timeout=200")

    event.listen(db.engine, "connect", short_wait)
    writer = sqlite3.connect(db.engine.url.database)
    writer.execute("BEGIN IMMEDIATE")  # a fetch's batch, holding the write lock
    try:
        assert search.tidy_index() == 0
    finally:
        writer.rollback()
        writer.close()
        event.remove(db.engine, "connect", short_wait)
        db.engine.dispose()
    assert before > 1 and _segments(db) == before
    assert search.tidy_index() > 0 and _segments(db) == 1
    assert len(search.search(team.id, "budget")) == 12
