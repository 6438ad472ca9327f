"""search on SQLite: a contentless FTS5 table keyed in date order

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 09:10:00

SQLite only (PostgreSQL's vector on the message row is unchanged). The FTS5 table kept a copy of every message's
subject, sender and first 256 KB of body beside the message row's own, and its rowid was the message id, so that
newest-first had to sort every match by date. It is rebuilt contentless (FTS5 keeps its index only; snippets are
made from the message row, as on PostgreSQL) with the rowid webapp.archive.search.search_key gives: the date in
whole seconds (1970-2106) above the 31-bit message id, so that newest-first is a backwards walk of the index
(docs/benchmarks.md, B4). Every message is indexed again (about a minute per 100,000 messages here).
"""
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None
BODY = 256 * 1024
TOKENIZE = "unicode61 remove_diacritics 2"
# As webapp.archive.search.SQLITE_KEY, as of this revision.
KEY = "((max(min(CAST(strftime('%s', substr(m.date, 1, 19)) AS INTEGER), 4294967295), 0) << 31) | m.id)"  # noqa


def _rebuild(options: str, key: str) -> None:
    op.execute("DROP TABLE IF EXISTS search_messages_new")
    op.execute(f"CREATE VIRTUAL TABLE search_messages_new USING fts5(subject, sender, body{options}, "
               f"tokenize = '{TOKENIZE}')")
    op.execute(f"INSERT INTO search_messages_new (rowid, subject, sender, body) SELECT {key}, "
               "coalesce(m.subject, ''), coalesce(m.from_name, '') || ' ' || coalesce(m.from_addr, ''), "
               f"substr(coalesce(m.body_text, ''), 1, {BODY}) FROM archive_messages m")
    op.execute("DROP TABLE search_messages")
    op.execute("ALTER TABLE search_messages_new RENAME TO search_messages")


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(", content=''", KEY)


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("", "m.id")
