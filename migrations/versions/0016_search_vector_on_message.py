"""search on PostgreSQL: the tsvector on the message row, words cut as on SQLite, large columns lz4

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 14:40:00

PostgreSQL only (SQLite's FTS5 table is unchanged). `search_messages` (a table joined to the messages) becomes a
`search_vector` column on `archive_messages` with a GIN index, so that "newest 50 matches" can walk the space's
(space, date, id) index (docs/benchmarks.md, B8). The vectors are rebuilt from the stored text by Python, cut into
words as FTS5's unicode61 cuts them (webapp.archive.search.pg_vector, copied here as of this revision): about
0.4 ms a message, so 1,000,000 messages take some minutes. body_text, the vector and the raw bytes are
compressed with lz4 from now on where the server has it (PostgreSQL 14+).
"""
import re
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None
BATCH = 1000
BODY = 256 * 1024
_LEXEME = re.compile(r"[^\W_]+")
_ASCII_WORDS = bytes(c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256))


def _fold(text):
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _lexemes(text):
    if text.isascii():
        words = text.encode().translate(_ASCII_WORDS).decode().split()
    else:
        words = _LEXEME.findall(_fold(text).lower())
    return [w for w in words if len(w.encode()) <= 2046]


def _vector(subject, sender, body):
    positions, at = {}, 0
    for text, weight in ((subject, "A"), (sender, "B")):
        for word in _lexemes(text or ""):
            at += 1
            positions.setdefault(word, []).append(f"{at}{weight}")
    for at, word in enumerate(_lexemes((body or "")[:BODY]), at + 1):
        found = positions.get(word)
        if found is None:
            positions[word] = [min(at, 16383)]
        elif len(found) < 256 and at < 16383:
            found.append(at)
    return " ".join(f"'{word}':{','.join(map(str, found))}" for word, found in positions.items())


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE archive_messages ADD COLUMN IF NOT EXISTS search_vector tsvector")
    for table, column in (("archive_messages", "body_text"), ("archive_messages", "search_vector"),
                          ("archive_raw", "raw")):
        try:
            with bind.begin_nested():
                op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")
        except Exception:  # PostgreSQL 13, or built without lz4: pglz as before
            break
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT id, subject, from_name, from_addr, body_text FROM archive_messages WHERE id > :last "
            "ORDER BY id LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            break
        bind.execute(sa.text("UPDATE archive_messages SET search_vector = CAST(:v AS tsvector) WHERE id = :id"),
                     [{"id": i, "v": _vector(s, f"{n} {a}", b)} for i, s, n, a, b in rows])
        last = rows[-1][0]
    op.execute("CREATE INDEX IF NOT EXISTS search_archive_vector ON archive_messages USING GIN (search_vector)")
    op.execute("ALTER TABLE archive_messages ALTER COLUMN search_vector SET STATISTICS 1000")
    op.execute("ANALYZE archive_messages")
    op.execute("DROP TABLE IF EXISTS search_messages")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE search_messages (message_id integer PRIMARY KEY REFERENCES archive_messages(id) "
               "ON DELETE CASCADE, space_id integer NOT NULL, vector tsvector NOT NULL)")
    op.execute("INSERT INTO search_messages (message_id, space_id, vector) SELECT id, space_id, "
               "coalesce(search_vector, ''::tsvector) FROM archive_messages")
    op.execute("CREATE INDEX search_messages_vector ON search_messages USING GIN (vector)")
    op.execute("CREATE INDEX search_messages_space ON search_messages (space_id)")
    op.execute("DROP INDEX IF EXISTS search_archive_vector")
    op.execute("ALTER TABLE archive_messages DROP COLUMN search_vector")
