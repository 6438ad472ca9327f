"""Full-text search over subject, sender and body: SQLite FTS5 or PostgreSQL tsvector, behind one search().

SQLite: a contentless FTS5 table beside the messages (the text is the message row's; FTS5 keeps only its index),
whose rowid is a key in date order, `search_key(date, id)`: newest-first is FTS5 walking its index backwards and
stopping after a page (docs/benchmarks.md, B4). Snippets are made from the message row on both engines alike
(snippet()). PostgreSQL: a `search_vector` tsvector on the message row itself, a
GIN index on it, and the (space, date, id) btree of the live archive, so that the planner can answer "newest 50
matches" either by walking the space's newest mail and testing each vector or by the GIN index, whichever its
statistics say is cheaper (docs/benchmarks.md, B8). The search objects are built by hand (migrations 0003,
0016, and create_tables() for tests); Alembic's autogenerate leaves every "search_*" object alone.
"""
import calendar
import contextvars
import functools
import html
import itertools
import math
import re
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field

from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from webapp.errors import UserError
from webapp.extensions import db

INDEXED_BODY = 256 * 1024
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)
START, STOP = "\x02", "\x03"
WALK = 2_000  # SQLite: newest-first first walks this many of the site's newest matches for a page of the space's
NEWEST_WINDOWS = (10_000,)  # then the space's newest this many messages, then everything
RANKED_AMONG = 500  # "Best match" ranks the most recent this many matches
SNIPPET_WINDOW = 1_200  # the body's characters read for a snippet
# SQLite's search key: the message's date in whole seconds since 1970 (clamped to 32 bits: 1970-2106) above its id
# (31 bits, as PostgreSQL's integer ids). Keys sort as (date, id) do, to the second.
KEY_ID_BITS = 31
ID_MASK = (1 << KEY_ID_BITS) - 1
MAX_SECONDS = (1 << 32) - 1
# The same key in SQL, from the message row `m` (SQLite holds dates as naive UTC text: a fraction of a second is cut
# off first, as strftime would round it up).
SQLITE_KEY = (f"((max(min(CAST(strftime('%s', substr(m.date, 1, 19)) AS INTEGER), {MAX_SECONDS}), 0) "
              f"<< {KEY_ID_BITS}) | m.id)")
SQLITE_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_messages USING fts5(subject, sender, body, content='', "
    "tokenize = 'unicode61 remove_diacritics 2')",
]
POSTGRES_DDL = [
    "ALTER TABLE archive_messages ADD COLUMN IF NOT EXISTS search_vector tsvector",
    "CREATE INDEX IF NOT EXISTS search_archive_vector ON archive_messages USING GIN (search_vector)",
    # 10,000 most common words in the statistics, not 1,000: a word outside them is estimated at half the rarest
    # one's frequency, and at 1,000,000 messages that made a word in 20 of them look common enough to walk the whole
    # date index for (9 s; docs/benchmarks.md, B8).
    "ALTER TABLE archive_messages ALTER COLUMN search_vector SET STATISTICS 1000",
]
# What PostgreSQL compresses (TOAST) with lz4 instead of pglz where the server has it: pglz took 0.29 ms for a
# 10 KB message here, lz4 0.05 ms (docs/benchmarks.md, B8).
LZ4_COLUMNS = (("archive_messages", "body_text"), ("archive_messages", "search_vector"), ("archive_raw", "raw"))
# PostgreSQL's words are cut here, not by its own parser: as FTS5's unicode61 cuts them (letters and digits,
# diacritics and case ignored), so both engines find the same mail ("bar" finds "foo@bar.example" on both), and
# the server is spared its parser (to_tsvector took 0.6 ms of a 9 KB message here, docs/benchmarks.md, B8).
_LEXEME = re.compile(r"[^\W_]+")
MAX_POSITION, MAX_POSITIONS, MAX_LEXEME = 16383, 256, 2046  # PostgreSQL's limits for a tsvector
# ASCII text is cut in C (bytes.translate, then split): ASCII letters lowered, digits kept, all else a space.
_ASCII_WORDS = bytes(c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256))


def fold(text: str) -> str:
    """Without diacritics ("Büro" -> "Buro", "café" -> "cafe"), as FTS5's remove_diacritics does on SQLite: what
    PostgreSQL indexes and is asked, so both engines find the same mail (no extension needed)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _dialect(bind=None) -> str:
    return (bind or db.session.get_bind()).dialect.name


def create_tables(connection) -> None:
    for statement in SQLITE_DDL if connection.dialect.name == "sqlite" else POSTGRES_DDL:
        connection.execute(text(statement))
    if connection.dialect.name == "postgresql":
        use_lz4(connection)


def use_lz4(connection) -> bool:
    """Compress the archive's large columns with lz4 where this PostgreSQL (14 and later, built with lz4) has it.
    Only new values are compressed so; old ones stay readable as they are."""
    for table, column in LZ4_COLUMNS:
        try:
            with connection.begin_nested():
                connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4"))
        except Exception:  # an older server or one built without lz4: pglz, as before
            return False
    return True


def drop_tables(connection) -> None:
    if connection.dialect.name == "sqlite":
        connection.execute(text("DROP TABLE IF EXISTS search_messages"))
    else:
        connection.execute(text("ALTER TABLE archive_messages DROP COLUMN IF EXISTS search_vector"))


@dataclass
class Term:
    kind: str  # word, phrase, prefix
    text: str


def parse_query(query: str) -> list[Term]:
    """The reader's words, each taken literally: quotes make a phrase, a trailing * a prefix, nothing else."""
    terms = []
    for phrase, word in _TOKEN.findall(query or ""):
        if phrase:
            if _WORD.search(phrase):
                terms.append(Term("phrase", phrase.strip()))
        elif word.endswith("*") and len(_WORD.findall(word)) == 1 and len(word.rstrip("*")) >= 2:
            terms.append(Term("prefix", _WORD.findall(word)[0]))
        elif _WORD.search(word):
            terms.append(Term("word", word.replace('"', "")))
    return terms[:20]


@dataclass
class TextQuery:
    """What the index answers: terms anywhere, in the subject, in the sender, and terms to leave out (the Mail
    tab's operators, webapp/archive/query.py, make one of these; a plain string is all `terms`)."""

    terms: list[Term] = field(default_factory=list)
    subject: list[Term] = field(default_factory=list)
    sender: list[Term] = field(default_factory=list)
    exclude: list[Term] = field(default_factory=list)

    def positive(self) -> list[Term]:
        return [*self.terms, *self.subject, *self.sender]


def _fts5_term(term: Term, column: str | None = None, expanded: dict | None = None) -> str:
    words = (expanded or {}).get(term.text) if term.kind == "prefix" else None
    if words:  # a prefix as the index's words that start with it, any of them
        literal = "(" + " OR ".join(f'"{w}"' for w in words) + ")"
    else:
        literal = '"' + term.text.replace('"', '""') + '"' + ("*" if term.kind == "prefix" else "")
    return f"{column} : {literal}" if column else literal


def fts5_query(query: TextQuery, expanded: dict | None = None) -> str:
    """Every term quoted, so AND, NEAR( or * typed by a reader are words, never operators; subject: and from:
    terms as FTS5 column filters, -words after NOT. Empty when nothing positive is asked (FTS5 cannot match a NOT
    alone: exclusions() is a condition then). `expanded` gives prefixes' words (prefix_words())."""
    positive = ([_fts5_term(t, None, expanded) for t in query.terms]
                + [_fts5_term(t, "subject", expanded) for t in query.subject]
                + [_fts5_term(t, "sender", expanded) for t in query.sender])
    if not positive:
        return ""
    negative = [_fts5_term(t) for t in query.exclude]
    return "(" + " AND ".join(positive) + ")" + (" NOT (" + " OR ".join(negative) + ")" if negative else "")


def exclusions(query: TextQuery, dialect: str) -> str:
    """The -words alone, as an FTS5 MATCH (any of them) or a tsquery (any of them): for a condition."""
    if dialect == "sqlite":
        return " OR ".join(_fts5_term(t) for t in query.exclude)
    return " | ".join(p for p in (_pg_term(t) for t in query.exclude) if p)


def _pg_term(term: Term, weight: str = "") -> str | None:
    words = lexemes(term.text)
    if not words:
        return None
    if term.kind == "prefix":
        return f"'{words[0]}':*{weight}"
    tag = f":{weight}" if weight else ""
    if len(words) == 1:
        return f"'{words[0]}'{tag}"
    return "(" + " <-> ".join(f"'{w}'{tag}" for w in words) + ")"


def pg_query(query: TextQuery) -> str:
    """The query as a tsquery, in its text form, cut into words as pg_vector cuts them: words ANDed, a phrase's
    (or a word's parts, "foo-bar") in sequence, a prefix as a prefix, subject: as weight A and from: as B (as
    pg_vector weights them), -words negated. Sent as one constant, so the planner sees how common the words are
    and chooses its plan by that. Empty when no positive term holds a word."""
    parts = [p for p in ([_pg_term(t) for t in query.terms] + [_pg_term(t, "A") for t in query.subject]
                         + [_pg_term(t, "B") for t in query.sender]) if p]
    if not parts:
        return ""
    parts += [f"!{p}" for p in (_pg_term(t) for t in query.exclude) if p]
    return " & ".join(parts)


def lexemes(text_: str) -> list[str]:
    """The words of a text as both engines index them: letters and digits, without diacritics, case folded."""
    words = ranking_words(text_)
    if text_.isascii():
        return words if all(len(w) <= MAX_LEXEME for w in words) else [w for w in words if len(w) <= MAX_LEXEME]
    return [w for w in words if len(w) <= MAX_LEXEME // 4 or len(w.encode()) <= MAX_LEXEME]


def pg_vector(subject: str, sender: str, body: str) -> str:
    """A message's tsvector, as PostgreSQL's text form: each word with its positions, the subject's weighted A
    and the sender's B (they rank first), the first INDEXED_BODY characters of the body after them."""
    positions: dict[str, list] = {}
    at = 0
    for text_, weight in ((subject, "A"), (sender, "B")):
        for word in lexemes(text_ or ""):
            at += 1
            positions.setdefault(word, []).append(f"{at}{weight}")
    for at, word in enumerate(lexemes((body or "")[:INDEXED_BODY]), at + 1):
        found = positions.get(word)
        if found is None:
            positions[word] = [at if at < MAX_POSITION else MAX_POSITION]
        elif len(found) < MAX_POSITIONS and at < MAX_POSITION:
            found.append(at)
    return " ".join(f"'{word}':{','.join(map(str, found))}" for word, found in positions.items())


def row_vector(row: dict) -> str:
    return pg_vector(row["subject"] or "", f"{row['from_name']} {row['from_addr']}", row["body_text"] or "")


def search_key(date, message_id: int) -> int:
    """SQLite's FTS5 rowid for a message: in (date to the second, id) order, and the id in its low bits."""
    if message_id > ID_MASK:
        raise ValueError(f"message id {message_id} is past the search key's {KEY_ID_BITS} bits")
    seconds = min(max(calendar.timegm(date.utctimetuple()), 0), MAX_SECONDS)
    return (seconds << KEY_ID_BITS) | message_id


def indexed_text(row) -> tuple[str, str, str]:
    """What FTS5 indexes of a message, exactly as it must be given again to take it out (a contentless table)."""
    return (row["subject"] or "", f"{row['from_name'] or ''} {row['from_addr'] or ''}",
            (row["body_text"] or "")[:INDEXED_BODY])


def index_rows(rows: list[dict]) -> None:
    """Add messages (dicts with id, date, subject, from_name, from_addr, body_text) to SQLite's FTS5 table in one
    statement. PostgreSQL's vector is written with the message row itself (ingest), so there is nothing to do."""
    if not rows or _dialect() != "sqlite":
        return
    connection = db.session.connection().connection.driver_connection
    connection.executemany("INSERT INTO search_messages (rowid, subject, sender, body) VALUES (?, ?, ?, ?)",
                           [(search_key(row["date"], row["id"]), *indexed_text(row)) for row in rows])


def remove(message_ids: list[int]) -> None:
    """Forget messages about to be deleted (PostgreSQL's vector goes with the row). SQLite's table is contentless:
    FTS5 takes a message out when given what it indexed, read here from the message rows themselves."""
    if not message_ids or _dialect() != "sqlite":
        return
    for start in range(0, len(message_ids), 500):
        chunk = ",".join(str(int(i)) for i in message_ids[start:start + 500])
        rows = _all(f"SELECT {SQLITE_KEY}, m.subject, m.from_name, m.from_addr, m.body_text "
                    f"FROM archive_messages m WHERE m.id IN ({chunk})", {})
        db.session.connection().connection.driver_connection.executemany(
            "INSERT INTO search_messages (search_messages, rowid, subject, sender, body) "
            "VALUES ('delete', ?, ?, ?, ?)",
            [(key, *indexed_text({"subject": s, "from_name": n, "from_addr": a, "body_text": b}))
             for key, s, n, a, b in rows])


# SQLite's index is a set of b-trees ("segments"): each commit that adds mail writes one, and FTS5 merges four of
# about one size into one as it goes. A search looks each word up in every segment, so their number is most of a
# rare word's search (docs/benchmarks.md, B4: at 200,000 messages 19 µs a lookup, 10 µs with one segment a size).
# tidy_index(), hourly (workers/cron.py), merges two of about one size, as an incremental merge with the table's
# 'usermerge' at 2 does: each message's entry is rewritten about log2 of the archive's commits times, not log4, and
# off the fetch's path. Not FTS5's 'optimize' (everything into one): that rewrites the whole index every time.
MERGE_PAGES = 1_000  # leaf pages (4 KB) a merge step writes, in a transaction of its own: ~80 ms of the write lock
TIDY_SECONDS = 300


def tidy_index(budget: float = TIDY_SECONDS) -> int:
    """SQLite: merge the search index's segments of about one size, a step at a time, until there is nothing to
    merge or `budget` seconds have passed (the next run goes on); the steps that merged something. Fetches and
    imports wait for one step at most. PostgreSQL: nothing to do (its GIN index is kept by autovacuum)."""
    if _dialect(db.engine) != "sqlite":
        return 0
    deadline, steps = time.monotonic() + budget, 0
    with db.engine.connect() as connection:
        driver = connection.connection.driver_connection
        try:
            connection.exec_driver_sql("INSERT INTO search_messages (search_messages, rank) VALUES ('usermerge', 2)")
            connection.commit()
            while time.monotonic() < deadline:
                before = driver.total_changes
                connection.exec_driver_sql("INSERT INTO search_messages (search_messages, rank) VALUES "
                                           "('merge', ?)", (MERGE_PAGES,))
                connection.commit()
                if driver.total_changes - before < 2:  # FTS5's sign that the step found nothing to merge
                    break
                steps += 1
        except OperationalError:  # the write lock stayed taken past the busy timeout: the next hour goes on
            connection.rollback()
    return steps


@dataclass
class Hit:
    message_id: int
    snippet: Markup


def search(space_id: int, query, *, order: str = "newest", limit: int = 50, before=None,
           extra=None) -> list[Hit]:
    """Matching messages of one space (never another's), newest first or best first, with a marked snippet.

    `query` is the reader's text or a TextQuery; `before` is a (date, id) keyset cursor for the newest-first order;
    `extra(dialect, param)` gives more conditions on the message row `m` and their parameters (the Mail tab's
    filters and operators), applied in the same statement."""
    if isinstance(query, str):
        query = TextQuery(terms=parse_query(query))
    if not query.positive():
        return []
    dialect = _dialect()
    style = (lambda name: f":{name}") if dialect == "sqlite" else (lambda name: f"%({name})s")
    where, extra_params = extra(dialect, style) if extra else ([], {})
    cond = "".join(f" AND {w}" for w in where)
    if dialect == "sqlite":
        rows = _search_sqlite(space_id, query, order, limit, before, cond, extra_params)
    else:
        rows = _search_postgres(space_id, query, order, limit, before, cond, extra_params)
    return [Hit(row[0], _marked(row[1])) for row in rows]


def _search_sqlite(space_id, query, order, limit, before, cond="", extra_params=None):
    db.session.flush()  # the statements below go to sqlite3 directly, past the session's autoflush
    token = _DRIVER.set(db.session.connection().connection.driver_connection)  # looked up once, not a statement
    try:
        return _search_sqlite_on(space_id, query, order, limit, before, cond, extra_params)
    finally:
        _DRIVER.reset(token)


# A prefix ("sasa*") is asked of FTS5 as the index's words that start with it ("sasabel" OR "sasacor" OR ...):
# FTS5 walks those lazily, newest first, and stops at a page, where for a prefix it first merges every such word's
# whole list (at 1,000,000 messages: 3.4 ms against 33 ms for "sasa*", 103 words; "bel*" took 43 s). A prefix that
# starts more than PREFIX_WORDS words is refused with a message, as Xapian (notmuch) can be told to (type more
# letters), unless the site is small. A prefix that is not plain ASCII letters and digits is asked as a prefix.
PREFIX_WORDS = 256
SMALL_SITE = 20_000  # up to this many messages a prefix of more words is asked of FTS5 as a prefix (its merge is cheap)
_PLAIN_PREFIX = re.compile(r"[a-z0-9]+")
# The words from `low` up to `high`, one step each: the index's vocabulary (a per-connection fts5vocab table) read a
# word at a time, never a word's whole list of messages as its 'row' form does.
_PREFIX_WORDS_SQL = (
    "WITH RECURSIVE w(term) AS (SELECT (SELECT term FROM temp.search_vocab WHERE term >= :low LIMIT 1) UNION ALL "
    "SELECT (SELECT term FROM temp.search_vocab WHERE term >= w.term || char(1) LIMIT 1) FROM w WHERE w.term < :high "
    "LIMIT :most) SELECT term FROM w WHERE term < :high")


def _small_site() -> bool:
    """Has the site stored at most SMALL_SITE messages (its largest message id, read off the end of the table)?"""
    return (_all("SELECT max(id) FROM archive_messages", {})[0][0] or 0) <= SMALL_SITE


class PrefixTooBroad(UserError):
    """A prefix that starts too many words to search for."""


def prefix_words(query: TextQuery) -> dict[str, list[str] | None]:
    """prefix -> the words of the index that start with it (None: none, or too many on a small site: asked as a
    prefix; a prefix that is not plain is left out, and asked as one). Too many on a larger site: PrefixTooBroad."""
    found = {}
    for term in query.positive():
        if term.kind != "prefix" or term.text in found or not _PLAIN_PREFIX.fullmatch(term.text.lower()):
            continue
        if not found:
            _all("CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_vocab USING fts5vocab(main, search_messages, "
                 "instance)", {})
        low = term.text.lower()
        words = _column(_PREFIX_WORDS_SQL, {"low": low, "high": low + "\U0010ffff", "most": PREFIX_WORDS + 2})
        if len(words) > PREFIX_WORDS:
            if _small_site():  # FTS5's own prefix costs little here: ask it so
                found[term.text] = None
                continue
            raise PrefixTooBroad(f"“{term.text}*” starts more than {PREFIX_WORDS} different words in the archive: "
                                 "type a few more letters.")
        found[term.text] = words or None
    return found


def _search_sqlite_on(space_id, query, order, limit, before, cond, extra_params):
    expanded = prefix_words(query)
    params = {**(extra_params or {}), "q": fts5_query(query, expanded), "space": space_id, "limit": limit}
    before_key = search_key(*before) if before is not None else None
    first = params["first"] = _first_word(query)
    if order == "relevance":
        keys, rows = _best_sqlite(params, query, cond, expanded), None
    else:
        keys, rows = _newest_sqlite(params, before_key, cond)
    if not keys:
        return []
    ids = [key & ID_MASK for key in keys]
    if rows is None:
        rows = _all(f"SELECT id, {_TEXT} FROM archive_messages m WHERE id IN ({','.join(map(str, ids))})", params)
    found = {}
    for message_id, subject, body, cut in rows:
        if cut is None:  # (or no body at all: NULL in SQL)
            body = body or ""
            cut = max(body.find(first) - SNIPPET_WINDOW // 3, 0)
            body = body[cut:cut + SNIPPET_WINDOW]
        found[message_id] = _snippet_of(subject, cut, body, query)
    return [(i, found[i]) for i in ids if i in found]


# A snippet's window of the body starts a little before the query's first word as written (in lower case), else at
# the start, as on PostgreSQL. A body up to 64 KB is read whole and searched in Python (str.find is several times
# faster than SQLite's instr, which decodes the text as it goes); a larger one is cut in SQL. _TEXT: a hit's subject,
# its body or the body's window, and where the window was cut (NULL: the whole body, to be cut here).
_SMALL = "length(CAST(m.body_text AS BLOB)) <= 65536"
_CUT = f"max(instr(m.body_text, :first) - {SNIPPET_WINDOW // 3}, 0)"
_TEXT = (f"m.subject, CASE WHEN {_SMALL} THEN m.body_text ELSE substr(m.body_text, {_CUT} + 1, {SNIPPET_WINDOW}) "
         f"END, CASE WHEN {_SMALL} THEN NULL ELSE {_CUT} END")
_LIVE = "m.space_id = :space AND m.deleted_at IS NULL"
_JOINED = f"JOIN archive_messages m ON m.id = (search_messages.rowid & {ID_MASK})"


def _newest_sqlite(params: dict, before_key: int | None, cond: str = "",
                   text: bool = True) -> tuple[list[int], list[tuple] | None]:
    """The keys of the space's newest matches, newest first, and (with `text`, where it costs no statement of its
    own: fewer matches than WALK, a rare word) their rows for snippets, as `_TEXT` (else None). Keys are in date
    order, so FTS5 walks its index backwards and SQLite stops at a page (no sort); each match is checked against its
    message row (the space, the trash, the Mail tab's filters). The walk is bounded first by the site's WALK newest
    matches: a page of this space's among them is exactly its newest (and with fewer matches than that there is no
    bound). Else the space's mail is a small part of the site's: the key of its newest NEWEST_WINDOWS messages
    bounds the walk, and then nothing does."""
    params = {**params, "before_key": before_key}  # (parameters, not literals: sqlite3 keeps statements prepared)
    bound = "" if before_key is None else " AND search_messages.rowid < :before_key"
    where = f"FROM search_messages {_JOINED} WHERE search_messages MATCH :q{bound} AND {_LIVE}{cond}"
    matches = f"SELECT search_messages.rowid {where}"
    newest = " ORDER BY search_messages.rowid DESC LIMIT :limit"
    edge = _all(f"SELECT rowid FROM search_messages WHERE search_messages MATCH :q{bound} ORDER BY rowid DESC "
                f"LIMIT 1 OFFSET {int(WALK) - 1}", params)
    if not edge and text:  # fewer matches than WALK: walking them all is as cheap; the page's text comes along
        rows = _all(f"SELECT search_messages.rowid, m.id, {_TEXT} {where}{newest}", params)
        return [row[0] for row in rows], [row[1:] for row in rows]
    if not edge:
        return _column(matches + newest, params), None
    keys = _column(f"{matches} AND search_messages.rowid >= :low{newest}", {**params, "low": edge[0][0]})
    if len(keys) == params["limit"]:
        return keys, None
    for window in NEWEST_WINDOWS:
        edge = _all(f"SELECT {SQLITE_KEY} FROM archive_messages m WHERE {_LIVE}"
                    + ("" if before_key is None else f" AND {SQLITE_KEY} < :before_key")
                    + " ORDER BY m.date DESC, m.id DESC LIMIT 1 OFFSET :skip", {**params, "skip": window - 1})
        if not edge:
            break  # the window is the whole (rest of the) space: the plain query below is as cheap
        keys = _column(f"{matches} AND search_messages.rowid >= :low{newest}", {**params, "low": edge[0][0]})
        if len(keys) == params["limit"]:
            return keys, None
    return _column(matches + newest, params), None


def _best_sqlite(params: dict, query: TextQuery, cond: str = "", expanded: dict | None = None) -> list[int]:
    """Best first by FTS5's bm25 (subject counts 5×, sender 3×), among the space's newest RANKED_AMONG matches:
    ranking every match of a common word grows with the archive. The score is computed here (bm25_scores), not by
    FTS5's bm25(), whose first act is to count every row of the whole index holding each word."""
    candidates, _ = _newest_sqlite({**params, "limit": RANKED_AMONG}, None, cond, text=False)
    if len(candidates) <= 1:
        return candidates
    scores = bm25_scores(candidates, query, expanded)
    return sorted(candidates, key=lambda key: (-scores[key], -key))[:params["limit"]]


# FTS5's bm25() ranks with the word's rarity over the whole index (its IDF): it counts every row holding the word
# before it scores one (64 ms for a common word at 1,000,000 messages, 113 for a two-word phrase; without bm25()
# the same statement took 1 ms). Here the same formula is computed for the candidates, with the rarity counted
# among the site's newest IDF_SAMPLE messages (on a site that small, exactly FTS5's figure) and each candidate's
# words counted in its own text, cut into words as the index cut them.
BM25_K1, BM25_B, BM25_WEIGHTS = 1.2, 0.75, (5.0, 3.0, 1.0)  # FTS5's k1 and b; subject, sender, body
IDF_SAMPLE = 20_000


@dataclass(frozen=True)
class _Ranked:
    """One word of the query as bm25 counts it: the word (or a prefix's letters), in which columns, and how to ask
    FTS5 for it."""

    word: str
    prefix: bool
    columns: tuple
    match: str


def _ranked_words(query: TextQuery, expanded: dict | None) -> list[_Ranked]:
    """bm25's phrases: each word of each positive term (a phrase scores by its words, as a word like "foo-bar")."""
    out = []
    for terms, column, columns in ((query.terms, None, (0, 1, 2)), (query.subject, "subject", (0,)),
                                   (query.sender, "sender", (1,))):
        for term in terms:
            if term.kind == "prefix":  # every word starting so: the index's words (expanded) are those
                out.append(_Ranked(fold(term.text).lower(), True, columns, _fts5_term(term, column, expanded)))
                continue
            for word in ranking_words(term.text):
                out.append(_Ranked(word, False, columns, _fts5_term(Term("word", word), column)))
    return out


def _varints(blob: bytes) -> list[int]:
    """SQLite's varints, as FTS5 writes its sizes and totals."""
    values, value, count = [], 0, 0
    for byte in blob:
        count += 1
        if count == 9:
            values.append((value << 8) | byte)
            value, count = 0, 0
        elif byte & 0x80:
            value = (value << 7) | (byte & 0x7F)
        else:
            values.append((value << 7) | byte)
            value, count = 0, 0
    return values


def ranking_words(text_: str) -> list[str]:
    """The words of a text as FTS5's unicode61 tokenizer cut them (letters and digits, case and diacritics
    folded), none left out for length as PostgreSQL's are."""
    if text_.isascii():
        return text_.encode().translate(_ASCII_WORDS).decode().split()
    return _LEXEME.findall(fold(text_).lower())


def bm25_scores(keys: list[int], query: TextQuery, expanded: dict | None = None) -> dict[int, float]:
    """key -> FTS5's bm25 of that message for `query` (higher is better; FTS5 gives the negative), its rarities
    counted among the site's newest IDF_SAMPLE messages, each message's length as FTS5 counted it."""
    ranked = _ranked_words(query, expanded)
    averages = _all("SELECT block FROM search_messages_data WHERE id = 1", {})
    totals = _varints(averages[0][0]) if averages else [0]
    rows, tokens = totals[0], sum(totals[1:])
    average_length = tokens / rows if rows else 1.0
    edge = _all(f"SELECT id FROM search_messages_docsize ORDER BY id DESC LIMIT 1 OFFSET {IDF_SAMPLE - 1}", {})
    low = edge[0][0] if edge else 0
    sample = IDF_SAMPLE if edge else rows
    rarity = []
    for word in ranked:
        hits = _all("SELECT count(*) FROM search_messages WHERE search_messages MATCH :m AND rowid >= :low",
                    {"m": word.match, "low": low})[0][0]
        idf = math.log((sample - hits + 0.5) / (hits + 0.5))
        rarity.append(idf if idf > 0 else 1e-6)
    listed = ",".join(map(str, keys))
    lengths = {key: sum(_varints(size)) for key, size in
               _all(f"SELECT id, sz FROM search_messages_docsize WHERE id IN ({listed})", {})}
    by_id = {k & ID_MASK: k for k in keys}
    scores = dict.fromkeys(keys, 0.0)
    for message_id, *columns in _all(
            "SELECT id, coalesce(subject, ''), coalesce(from_name, '') || ' ' || coalesce(from_addr, ''), "
            f"coalesce(substr(body_text, 1, {INDEXED_BODY}), '') FROM archive_messages "
            f"WHERE id IN ({','.join(map(str, by_id))})", {}):
        key = by_id[message_id]
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths.get(key, 0) / average_length)
        counters = [_word_counter(text_) for text_ in columns]
        score = 0.0
        for word, idf in zip(ranked, rarity):
            weighted = sum(BM25_WEIGHTS[c] * counters[c](word.word, word.prefix) for c in word.columns)
            score += idf * weighted * (BM25_K1 + 1) / (weighted + norm)
        scores[key] = score
    return scores


def _word_counter(text_: str):
    """(word, prefix) -> how many of the text's words are `word` (or start with it), as FTS5 cut them. ASCII text is
    counted in C: its words lowered, everything else a space; a word is a space, the word and a space after it
    (looked at, not taken, so "bel bel" counts twice), a prefix a space and the prefix."""
    if text_.isascii():
        spaced = b" " + text_.encode().translate(_ASCII_WORDS) + b" "
        return lambda word, prefix: (spaced.count(b" " + word.encode()) if prefix
                                     else len(_whole_word(word).findall(spaced)))
    found = ranking_words(text_)
    return lambda word, prefix: sum(w.startswith(word) for w in found) if prefix else found.count(word)


@functools.lru_cache(maxsize=256)
def _whole_word(word: str) -> re.Pattern:
    return re.compile(re.escape(b" " + word.encode()) + b"(?= )")


def _all(sql: str, params: dict) -> list[tuple]:
    """Rows of one statement on the session's own sqlite3 connection, in its transaction: through text() each
    statement's overhead was most of a rare word's search (docs/benchmarks.md, B4)."""
    driver = _DRIVER.get() or db.session.connection().connection.driver_connection
    return driver.execute(sql, params).fetchall()


_DRIVER: contextvars.ContextVar = contextvars.ContextVar("search_driver", default=None)  # during one search()


def _column(sql: str, params: dict) -> list:
    return [row[0] for row in _all(sql, params)]


def _search_postgres(space_id, query, order, limit, before, cond="", extra_params=None):
    """Newest first: the space's newest `limit` live matches; Best match: its newest RANKED_AMONG ranked (subject
    counts most), as on SQLite: ranking every match of a common word grows with the archive. The matches are found
    the cheapest of three ways (_pg_newest_ids): walking the space's mail by date testing each row's vector, or the
    GIN index's matches within a window of the space's newest mail, or all of them. The page then comes in one
    statement with its snippets."""
    tsquery = "%(query)s::tsquery"
    among = RANKED_AMONG if order == "relevance" else limit  # the newest matches found (and ranked, for Best match)
    params = {**(extra_params or {}), "query": pg_query(query), "space": space_id, "limit": limit, "among": among}
    if not params["query"]:
        return []
    keyset = ""
    if before is not None and order != "relevance":
        params["before_date"], params["before_id"] = before
        keyset = " AND (m.date, m.id) < (%(before_date)s, %(before_id)s)"
    db.session.flush()  # the statements go to psycopg directly, past the session's autoflush
    connection = db.session.connection().connection.driver_connection
    found = _pg_newest_ids(connection, params, among, keyset, cond)
    if found is None:  # the walk: in the page's own statement
        newest = ("SELECT m.id, m.date, m.search_vector FROM archive_messages m WHERE m.space_id = %(space)s "
                  f"AND m.deleted_at IS NULL AND m.search_vector @@ {tsquery}{keyset}{cond} "
                  "ORDER BY m.date DESC, m.id DESC LIMIT %(among)s")
    elif not found:
        return []
    else:
        params["ids"] = found
        newest = "SELECT m.id, m.date, m.search_vector FROM archive_messages m WHERE m.id = ANY(%(ids)s)"
    if order == "relevance":
        page = (f"SELECT id, ts_rank_cd(search_vector, {tsquery}) AS rank FROM ({newest}) recent "
                "ORDER BY rank DESC, id DESC LIMIT %(limit)s")
        order_by = "hits.rank DESC, hits.id DESC"
    else:
        page = f"SELECT id, date FROM ({newest}) recent"
        order_by = "hits.date DESC, hits.id DESC"
    # The page's snippets are made from the mail's own words (the index holds them folded), from a window of the
    # body around the first place the query's first word appears as written (in lower case; lower() of each body
    # in SQL cost more than it saved): whole bodies were most of a page's time (50 bodies of 9 KB, fetched and
    # read word by word). Else the window is the body's start.
    params["first"] = _first_word(query)
    sql = (f"SELECT hits.id, m.subject, w.cut, substr(m.body_text, w.cut + 1, {SNIPPET_WINDOW}) FROM ({page}) hits "
           "JOIN archive_messages m ON m.id = hits.id, LATERAL (SELECT greatest(strpos(m.body_text, %(first)s) "
           f"- {SNIPPET_WINDOW // 3}, 0) AS cut) w ORDER BY {order_by}")
    # Never a prepared statement: a generic plan would not know how common the words are.
    rows = connection.execute(sql, params, prepare=False).fetchall()
    return [(row[0], _snippet_of(*row[1:], query)) for row in rows]


# PostgreSQL finds a space's newest matches of a query one of three ways, and its planner cannot tell which is the
# cheapest (costs measured at 1,000,000 messages, in units of one GIN index entry read, ~0.2 µs):
# - the walk: the space's live mail newest first (its date index), each row's vector read out of TOAST and tested
#   until `limit` match: `limit / share` rows at WALK_COST each;
# - a window: the GIN index's matches (`share` of the whole site's mail, at 1 each) ANDed with the space's newest
#   `WINDOW_ROWS * limit / share` messages (found by counting that far down its date index, EDGE_COST a row, and read
#   as a bitmap), then only the rows in both read;
# - all the GIN index's matches in the space, each row read (HEAP_COST each): best for a rare word.
# The planner prices the walk as if reading a vector cost nothing: for a word in 2% of the mail it walked 22,000 rows
# to find the newest 500 (820 ms) where the window took 10 ms (docs/benchmarks.md, B8). So the share of the mail
# the query matches is taken from the planner's own estimate (its statistics of the vector column), and the way
# chosen here; the walk is left to the planner's statement, the other two are asked so that it has no walk to take.
WALK_COST, HEAP_COST, EDGE_COST = 45, 23, 0.45
WINDOW_ROWS = 2  # a window holds this many times the rows expected to hold `limit` matches


def _pg_share(connection, params: dict) -> tuple[float, float]:
    """(the share of all messages the query matches, by the planner's estimate; how many messages there are)."""
    def estimate(where: str) -> float:
        plan = connection.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM archive_messages m{where}", params,
                                  prepare=False).fetchone()[0]
        return max(plan[0]["Plan"]["Plan Rows"], 1)

    total = connection.execute("SELECT reltuples FROM pg_class WHERE oid = 'archive_messages'::regclass").fetchone()[0]
    if not total or total <= 0:  # never analyzed yet: the planner's guess from the table's size, not a count of it
        total = estimate("")
    return min(estimate(" WHERE m.search_vector @@ %(query)s::tsquery") / total, 1.0), float(total)


def _pg_newest_ids(connection, params: dict, limit: int, keyset: str, cond: str) -> list[int] | None:
    """The ids of the space's newest `limit` matches (after the keyset cursor, if any), newest first, from a window
    or from all the GIN index's matches; None where the walk is the cheapest (the caller's statement walks, with its
    page)."""
    share, total = _pg_share(connection, params)
    expected, walk = share * total, limit / share
    if walk * WALK_COST <= expected:
        return None
    # A MATERIALIZED common table expression, without ORDER BY or LIMIT: the planner has no walk to choose.
    matches = ("WITH hits AS MATERIALIZED (SELECT m.id, m.date FROM archive_messages m WHERE m.space_id = %(space)s "
               f"AND m.deleted_at IS NULL AND m.search_vector @@ %(query)s::tsquery{keyset}{cond}<window>) "
               "SELECT id FROM hits ORDER BY date DESC, id DESC LIMIT %(newest)s")
    window = max(int(WINDOW_ROWS * walk), 1)
    if window < total and expected * HEAP_COST > window * EDGE_COST:
        edge = connection.execute(
            f"SELECT m.date, m.id FROM archive_messages m WHERE m.space_id = %(space)s AND m.deleted_at IS NULL"
            f"{keyset} ORDER BY m.date DESC, m.id DESC OFFSET %(skip)s LIMIT 1", {**params, "skip": window - 1},
            prepare=False).fetchone()
        if edge is not None:  # (else the window is the whole (rest of the) space)
            found = [row[0] for row in connection.execute(
                matches.replace("<window>", " AND (m.date, m.id) >= (%(edge_date)s, %(edge_id)s)"),
                {**params, "edge_date": edge[0], "edge_id": edge[1], "newest": limit}, prepare=False)]
            if len(found) == limit:
                return found
    return [row[0] for row in connection.execute(matches.replace("<window>", ""), {**params, "newest": limit},
                                                 prepare=False)]


def _first_word(query: TextQuery) -> str:
    """The word a snippet's window of the body is cut around (as written, in lower case)."""
    return next((w for t in query.positive() for w in lexemes(t.text)), "")


def _snippet_of(subject: str, cut: int, window: str, query: TextQuery) -> str:
    """A hit's snippet, from its subject and a window of its body starting at `cut` (both engines)."""
    subject, window = subject or "", window or ""
    return snippet(f"{subject} · {'… ' if cut else ''}{window}", query.positive(),
                   ascii_=subject.isascii() and window.isascii())


def snippet(text_: str, terms: list[Term], width: int = 24, ascii_: bool | None = None) -> str:
    """About `width` words around the first match, each matching word marked as written (diacritics and case
    ignored when matching, as the index does). The text is read only up to the window: a whole 9 KB body cut into
    words cost ~1 ms, 50 ms for a page of hits (docs/benchmarks.md, B8). ASCII text is searched by one regular
    expression of the query's words and cut around the first hit (a word at a time in Python was most of a page
    of hits' time, B4); other text word by word, as FTS5 folds it. `ascii_`: the caller knows the text is ASCII but
    for separators that are no letters (" · ", "… ")."""
    words, prefixes, pattern = _query_words(tuple((t.kind, t.text) for t in terms))
    if not (text_.isascii() if ascii_ is None else ascii_):
        return _snippet_by_words(text_, set(words), list(prefixes), width)
    lowered = text_.lower()  # the same length (ASCII): where words are written, found in C before any expression
    needles = (*words, *prefixes)
    first = _ascii_hits(text_, lowered, needles, pattern, 0, len(text_), first_only=True)
    if not first:  # matched where the text shown does not reach (the sender): its first words
        first = _FIRST_WORD.search(text_)
        start, end = (first.start(), _words_after(width).match(text_, first.start()).end()) if first else (0, 0)
        hits = []
    else:
        at = first[0][0]
        lo = max(0, at - 40 * (width // 3))
        back = _words_before(width // 3).match(text_[lo:at][::-1])  # up to width/3 words before, read backwards
        start = at - back.end()
        if start == lo and lo and _LEXEME.match(text_, lo - 1):  # the read began inside a word: not that one
            start = _SKIP_WORD.match(text_, lo).end()
        before = len(_LEXEME.findall(text_, start, at))
        end = _words_after(width - before).match(text_, at).end()
        hits = _ascii_hits(text_, lowered, needles, pattern, at, end)
    if start == end:
        return ""
    out, pos = [], start
    for hit_start, hit_end in hits:
        if hit_start >= end:
            break
        out += (text_[pos:hit_start], START, text_[hit_start:hit_end], STOP)
        pos = hit_end
    out.append(text_[pos:end])
    return ("…" if start else "") + " ".join("".join(out).split()) + ("…" if end < len(text_) else "")


def _ascii_hits(text_: str, lowered: str, needles: tuple, pattern, start: int, end: int,
                first_only: bool = False) -> list[tuple[int, int]]:
    """Where the query's words are in ASCII text, starting from `start` to before `end`, as whole words (prefixes
    as a word's start), or only the first of them: each place a word is written (str.find, in C), checked by the
    query's expression (which alone would try every position: slower)."""
    spans: set[tuple[int, int]] = set()
    for needle in needles if pattern is not None else ():
        at = lowered.find(needle, start, end + len(needle) - 1)
        while at >= 0:
            found = pattern.match(text_, at)
            if found:
                spans.add(found.span())
                if first_only:
                    end = at  # only one starting before it can come first now
                    break
            at = lowered.find(needle, at + 1, end + len(needle) - 1)
    return sorted(spans)[:1] if first_only else sorted(spans)


# Runs of words, as regular expressions: n words read forwards (from a word's start), n words read backwards (on
# the reversed text before a word: separators, then a word), and the rest of a word with what follows it.
# (Compiled when first asked for: compiling every width at import cost each process 8 ms.)
@functools.cache
def _words_after(n: int) -> re.Pattern:
    return re.compile(r"[^\W_]+(?:[\W_]+[^\W_]+){0,%d}" % max(n - 1, 0))


@functools.cache
def _words_before(n: int) -> re.Pattern:
    return re.compile(r"(?:[\W_]+[^\W_]+){0,%d}" % n)


_SKIP_WORD = re.compile(r"[^\W_]*[\W_]*")
_FIRST_WORD = re.compile(r"[^\W_]")


@functools.lru_cache(maxsize=256)
def _query_words(terms: tuple) -> tuple[frozenset, tuple, re.Pattern | None]:
    """A query's words and prefixes as the index holds them, and an expression finding any of them in ASCII text
    as a whole word (a prefix as the start of one), in any case."""
    words, prefixes = set(), []
    for kind, text_ in terms:
        found = lexemes(text_)
        if kind == "prefix":
            prefixes += found[:1]
        else:
            words.update(found)
    alternatives = [re.escape(w) + "(?![^\\W_])" for w in sorted(words, key=len, reverse=True) if w.isascii()]
    alternatives += [re.escape(p) + "[^\\W_]*" for p in prefixes if p.isascii()]
    pattern = re.compile("(?<![^\\W_])(?:" + "|".join(alternatives) + ")", re.IGNORECASE) if alternatives else None
    return frozenset(words), tuple(prefixes), pattern


def _snippet_by_words(text_: str, words: set[str], prefixes: list[str], width: int) -> str:
    """snippet() for text beyond ASCII: each word folded as FTS5 folds it (case and diacritics)."""

    def hit(word: str) -> bool:
        key = word.lower() if word.isascii() else fold(word).lower()
        return key in words or any(key.startswith(p) for p in prefixes)

    before: deque = deque(maxlen=width // 3)
    scan = _LEXEME.finditer(text_, _near_first_hit(text_, words, prefixes, width))
    shown = None
    for match in scan:
        if hit(match.group(0)):
            shown = [*before, match]
            break
        before.append(match)
    if shown is None:  # matched where the text shown does not reach (the sender, or deep in a long body)
        shown = list(itertools.islice(_LEXEME.finditer(text_), width))
    else:
        shown += itertools.islice(scan, width - len(shown))
    if not shown:
        return ""
    start, end = shown[0].start(), shown[-1].end()
    out, pos = [], start
    for m in shown:
        out.append(text_[pos:m.start()])
        out.append(f"{START}{m.group(0)}{STOP}" if hit(m.group(0)) else m.group(0))
        pos = m.end()
    return ("…" if start else "") + " ".join("".join(out).split()) + ("…" if end < len(text_) else "")


def _near_first_hit(text_: str, words: set[str], prefixes: list[str], width: int) -> int:
    """Where to start reading for the snippet: a little before the first place a query word appears as written
    (str.find, in C; maybe inside a longer word, which the reading then passes), else 0. A match written with
    diacritics the query lacks ("café" for "cafe") is found by the word-by-word reading from there."""
    lowered = text_.lower()
    if len(lowered) != len(text_):  # lowering moved positions (rare letters): read from the start
        return 0
    found = [at for at in (lowered.find(w) for w in (*words, *prefixes)) if at >= 0]
    if not found:
        return 0
    start = max(0, min(found) - 40 * (width // 3))
    while 0 < start < len(text_) and _LEXEME.match(text_, start - 1):  # not in the middle of a word
        start -= 1
    return start


def _marked(snippet: str | None) -> Markup:
    """Escape the mail's text, then turn the engine's markers into <mark>."""
    escaped = html.escape(snippet or "", quote=False)
    return Markup(escaped.replace(START, "<mark>").replace(STOP, "</mark>"))
