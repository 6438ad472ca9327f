"""Full-text search over subject, sender and body: SQLite FTS5 or PostgreSQL tsvector, behind one search().

The search tables are built by hand (migrations/versions/0003, and create_tables() for tests); Alembic's
autogenerate leaves every "search_*" object alone (migrations/env.py).
"""
import html
import re
import unicodedata
from dataclasses import dataclass

from markupsafe import Markup
from sqlalchemy import text

from webapp.extensions import db

INDEXED_BODY = 256 * 1024
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)
START, STOP = "\x02", "\x03"
NEWEST_WINDOWS = (1_000, 10_000)  # newest messages of a space searched first, for newest-first results
FEW_MATCHES = 2_000  # fewer matches than this are sorted by date directly (cheaper than the windows)
RANKED_AMONG = 500  # "Best match" ranks the most recently archived this many matches (SQLite)

SQLITE_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_messages USING fts5("
    "subject, sender, body, tokenize = 'unicode61 remove_diacritics 2')",
]
POSTGRES_DDL = [
    "CREATE TABLE IF NOT EXISTS search_messages (message_id integer PRIMARY KEY "
    "REFERENCES archive_messages(id) ON DELETE CASCADE, space_id integer NOT NULL, vector tsvector NOT NULL)",
    "CREATE INDEX IF NOT EXISTS search_messages_vector ON search_messages USING GIN (vector)",
    "CREATE INDEX IF NOT EXISTS search_messages_space ON search_messages (space_id)",
]


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


def drop_tables(connection) -> None:
    connection.execute(text("DROP TABLE IF EXISTS search_messages"))


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


def fts5_query(terms: list[Term]) -> str:
    """Every term quoted, so AND, NEAR( or * typed by a reader are words, never operators."""
    quoted = []
    for term in terms:
        literal = '"' + term.text.replace('"', '""') + '"'
        quoted.append(literal + "*" if term.kind == "prefix" else literal)
    return " ".join(quoted)


def _pg_query(terms: list[Term]) -> tuple[str, dict]:
    parts, params = [], {}
    for i, term in enumerate(terms):
        params[f"t{i}"] = fold(term.text)
        if term.kind == "phrase":
            parts.append(f"phraseto_tsquery('simple', :t{i})")
        elif term.kind == "prefix":
            parts.append(f"to_tsquery('simple', quote_literal(lower(:t{i})) || ':*')")
        else:
            parts.append(f"plainto_tsquery('simple', :t{i})")
    return " && ".join(parts), params


def index(message) -> None:
    """Add one message to the index, in the caller's transaction."""
    index_rows([{"id": message.id, "space_id": message.space_id, "subject": message.subject,
                 "from_name": message.from_name, "from_addr": message.from_addr, "body_text": message.body_text}])


def index_rows(rows: list[dict]) -> None:
    """Add messages (dicts with id, space_id, subject, from_name, from_addr, body_text) in one statement."""
    params = [{"id": row["id"], "space": row["space_id"], "s": row["subject"] or "",
               "f": f"{row['from_name']} {row['from_addr']}", "b": (row["body_text"] or "")[:INDEXED_BODY]}
              for row in rows]
    if not params:
        return
    if _dialect() == "sqlite":
        db.session.execute(text("INSERT INTO search_messages (rowid, subject, sender, body) VALUES (:id, :s, :f, :b)"),
                           params)
    else:
        for param in params:
            param["s"], param["f"], param["b"] = fold(param["s"]), fold(param["f"]), fold(param["b"])
        db.session.execute(text(
            "INSERT INTO search_messages (message_id, space_id, vector) VALUES (:id, :space, "
            "setweight(to_tsvector('simple', :s), 'A') || setweight(to_tsvector('simple', :f), 'B') || "
            "to_tsvector('simple', :b))"), params)


def remove(message_ids: list[int]) -> None:
    if not message_ids:
        return
    column = "rowid" if _dialect() == "sqlite" else "message_id"
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start:start + 500]
        db.session.execute(text(f"DELETE FROM search_messages WHERE {column} IN ({','.join(map(str, chunk))})"))


@dataclass
class Hit:
    message_id: int
    snippet: Markup


def search(space_id: int, query: str, *, order: str = "newest", limit: int = 50, before=None) -> list[Hit]:
    """Matching messages of one space (never another's), newest first or best first, with a marked snippet.

    `before` is a (date, id) keyset cursor for the newest-first order."""
    terms = parse_query(query)
    if not terms:
        return []
    if _dialect() == "sqlite":
        rows = _search_sqlite(space_id, terms, order, limit, before)
    else:
        rows = _search_postgres(space_id, terms, order, limit, before)
    return [Hit(row[0], _marked(row[1])) for row in rows]


def _keyset(before, params) -> str:
    if before is None:
        return ""
    params["before_date"], params["before_id"] = before
    return " AND (m.date < :before_date OR (m.date = :before_date AND m.id < :before_id))"


def _search_sqlite(space_id, terms, order, limit, before):
    params = {"q": fts5_query(terms), "space": space_id, "limit": limit}
    db.session.flush()  # the statements below go to sqlite3 directly, past the session's autoflush
    if before is not None:  # SQLite holds dates as naive UTC text: compare in that form
        before = (before[0].replace(tzinfo=None).isoformat(sep=" "), before[1])
    ids = _best_sqlite(params, terms) if order == "relevance" else _newest_sqlite(params, before)
    if not ids:
        return []
    # Snippets for the page's rows only (asked for in the query above, SQLite made one for every match). FTS5
    # gets the rowid range and skips to it; the IN list is SQLite's to apply ("+"), as FTS5 would run once a value.
    snippets = dict(_all(
        "SELECT rowid, snippet(search_messages, -1, char(2), char(3), '…', 16) FROM search_messages "
        "WHERE search_messages MATCH :q AND rowid BETWEEN :low AND :high "
        f"AND +rowid IN ({','.join(str(int(i)) for i in ids)})", {**params, "low": min(ids), "high": max(ids)}))
    return [(i, snippets.get(i)) for i in ids]


_MATCHES = ("SELECT m.id FROM search_messages JOIN archive_messages m ON m.id = search_messages.rowid "
            "WHERE search_messages MATCH :q AND m.space_id = :space AND m.deleted_at IS NULL")


def _newest_sqlite(params: dict, before) -> list[int]:
    """The newest matches. Sorting every match by date grows with the matches (a common word: all of the
    archive), so look among the space's newest 1,000, then 10,000 messages first: when that window holds a
    page of matches, they are exactly the newest (everything outside is older). Message ids grow with arrival,
    so the window's id range keeps FTS5's scan short; mail imported out of date order only widens it."""
    keyset = _keyset(before, params)
    few = _all("SELECT count(*) FROM (SELECT 1 FROM search_messages WHERE search_messages MATCH :q LIMIT :few)",
               {**params, "few": FEW_MATCHES})[0][0] < FEW_MATCHES
    for window in () if few else NEWEST_WINDOWS:  # few matches anywhere: sorting them all is cheaper
        edge = _all(
            "SELECT min(id), max(id), count(*), min(date) FROM (SELECT m.id, m.date FROM archive_messages m "
            "WHERE m.space_id = :space AND m.deleted_at IS NULL" + keyset
            + " ORDER BY m.date DESC, m.id DESC LIMIT :window)", {**params, "window": window})[0]
        if edge[2] < window:
            break  # the window is the whole (rest of the) space: the plain query below is as cheap
        last = _all(
            "SELECT m.date, m.id FROM archive_messages m WHERE m.space_id = :space AND m.deleted_at IS NULL" + keyset
            + " ORDER BY m.date DESC, m.id DESC LIMIT 1 OFFSET :skip", {**params, "skip": window - 1})[0]
        ids = _column(
            _MATCHES + keyset + " AND search_messages.rowid BETWEEN :low AND :high AND (m.date > :edge_date OR "
            "(m.date = :edge_date AND m.id >= :edge_id)) ORDER BY m.date DESC, m.id DESC LIMIT :limit",
            {**params, "low": edge[0], "high": edge[1], "edge_date": last[0], "edge_id": last[1]})
        if len(ids) == params["limit"]:
            return ids
    return _column(_MATCHES + keyset + " ORDER BY m.date DESC, m.id DESC LIMIT :limit", params)


def _best_sqlite(params: dict, terms: list[Term]) -> list[int]:
    """Best first by bm25 (subject counts 5×, sender 3×), among the most recently archived RANKED_AMONG matches:
    ranking every match of a common word grows with the archive. Exact up to that many. A phrase is scored by
    its words: bm25 of a phrase first counts every row holding it (docs/benchmarks.md, B4)."""
    candidates = _column(
        "SELECT m.id FROM (SELECT rowid AS id FROM search_messages WHERE search_messages MATCH :q "
        "ORDER BY rowid DESC LIMIT :among) f JOIN archive_messages m ON m.id = f.id "
        "WHERE m.space_id = :space AND m.deleted_at IS NULL", {**params, "among": RANKED_AMONG})
    if len(candidates) < min(params["limit"], RANKED_AMONG):  # other spaces' mail came first: this space's all
        candidates = _column(_MATCHES, params)
    if not candidates:
        return []
    words = fts5_query([Term("word", w) if t.kind == "phrase" else t for t in terms for w in
                        (_WORD.findall(t.text) if t.kind == "phrase" else [t.text])])
    return _column(
        "SELECT rowid FROM search_messages WHERE search_messages MATCH :words AND rowid BETWEEN :low AND :high "
        f"AND +rowid IN ({','.join(str(int(i)) for i in candidates)}) "
        "ORDER BY bm25(search_messages, 5.0, 3.0, 1.0), rowid DESC LIMIT :limit",
        {"words": words, "low": min(candidates), "high": max(candidates), "limit": params["limit"]})


def _all(sql: str, params: dict) -> list[tuple]:
    """Rows of one statement on the session's own sqlite3 connection, in its transaction: through text() each
    statement's overhead was most of a rare word's search (docs/benchmarks.md, B4)."""
    return db.session.connection().connection.driver_connection.execute(sql, params).fetchall()


def _column(sql: str, params: dict) -> list:
    return [row[0] for row in _all(sql, params)]


def _search_postgres(space_id, terms, order, limit, before):
    tsquery, params = _pg_query(terms)
    params.update({"space": space_id, "limit": limit})
    relevance = order == "relevance"
    order_by = "rank DESC, id DESC" if relevance else "date DESC, id DESC"
    # The page of hits first, then its snippets, made from the mail's own words (the index holds them folded).
    sql = (f"WITH q AS (SELECT {tsquery} AS query), hits AS ("
           "SELECT m.id, m.date, ts_rank_cd(s.vector, q.query) AS rank "
           "FROM search_messages s JOIN archive_messages m ON m.id = s.message_id, q "
           "WHERE s.vector @@ q.query AND s.space_id = :space AND m.deleted_at IS NULL"
           + ("" if relevance else _keyset(before, params)) + f" ORDER BY {order_by} LIMIT :limit) "
           "SELECT hits.id, m.subject, left(m.body_text, 100000) "
           f"FROM hits JOIN archive_messages m ON m.id = hits.id ORDER BY hits.{order_by.replace(', ', ', hits.')}")
    return [(row[0], snippet(f"{row[1]} · {row[2]}", terms)) for row in db.session.execute(text(sql), params)]


def snippet(text_: str, terms: list[Term], width: int = 24) -> str:
    """About `width` words around the first match, each matching word marked as written (diacritics and case
    ignored when matching, as the index does)."""
    words = [m for m in _WORD.finditer(text_)]
    wanted = [(t.kind, fold(w).casefold()) for t in terms for w in (_WORD.findall(t.text) or [t.text])]

    def hit(word: str) -> bool:
        key = fold(word).casefold()
        return any(key.startswith(w) if kind == "prefix" else key == w for kind, w in wanted)

    marks = [i for i, m in enumerate(words) if hit(m.group(0))]
    if not words:
        return ""
    first = max((marks[0] if marks else 0) - width // 3, 0)
    shown = words[first:first + width]
    start, end = shown[0].start(), shown[-1].end()
    out, pos = [], start
    for m in shown:
        out.append(text_[pos:m.start()])
        out.append(f"{START}{m.group(0)}{STOP}" if hit(m.group(0)) else m.group(0))
        pos = m.end()
    return ("…" if start else "") + " ".join("".join(out).split()) + ("…" if end < len(text_) else "")


def _marked(snippet: str | None) -> Markup:
    """Escape the mail's text, then turn the engine's markers into <mark>."""
    escaped = html.escape(snippet or "", quote=False)
    return Markup(escaped.replace(START, "<mark>").replace(STOP, "</mark>"))
