"""search: diacritics ignored ("buro" finds "Büro", "cafe" finds "café") on SQLite and PostgreSQL alike

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 13:05:00

SQLite: the FTS5 table is rebuilt with `remove_diacritics 2` (its rows copied over). PostgreSQL: the vectors are
rebuilt from text folded by Python (webapp.archive.search.fold), as new mail is indexed, so no extension
(unaccent) is needed.
"""
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None
BATCH = 1000
BODY = 256 * 1024


def fold(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _rebuild_sqlite(tokenize: str) -> None:
    op.execute("DROP TABLE IF EXISTS search_messages_new")
    op.execute(f"CREATE VIRTUAL TABLE search_messages_new USING fts5(subject, sender, body, tokenize = '{tokenize}')")
    op.execute("INSERT INTO search_messages_new (rowid, subject, sender, body) "
               "SELECT rowid, subject, sender, body FROM search_messages")
    op.execute("DROP TABLE search_messages")
    op.execute("ALTER TABLE search_messages_new RENAME TO search_messages")


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite("unicode61 remove_diacritics 2")
        return
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT m.id, m.subject, m.from_name, m.from_addr, m.body_text FROM archive_messages m "
            "JOIN search_messages s ON s.message_id = m.id WHERE m.id > :last ORDER BY m.id LIMIT :n"),
            {"last": last, "n": BATCH}).all()
        if not rows:
            return
        changed = [{"id": i, "s": fold(s or ""), "f": fold(f"{n} {a}"), "b": fold((b or "")[:BODY])}
                   for i, s, n, a, b in rows if not all((v or "").isascii() for v in (s, n, a, b))]
        if changed:
            bind.execute(sa.text(
                "UPDATE search_messages SET vector = setweight(to_tsvector('simple', :s), 'A') || "
                "setweight(to_tsvector('simple', :f), 'B') || to_tsvector('simple', :b) WHERE message_id = :id"),
                changed)
        last = rows[-1][0]


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("unicode61 remove_diacritics 0")
