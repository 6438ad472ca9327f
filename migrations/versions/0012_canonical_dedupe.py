"""archive: the dedupe key is the sha256 of a message's canonical form

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 12:40:00

The same message fetched over POP3 (which adds a missing final newline) and over IMAP, or imported from an mbox
(LF line ends), was archived twice (issue 16): the key is now the sha256 of the message with CRLF line ends and
one final line break (webapp.archive.ingest.canonical). Most mail already is in that form, so its key does not
change; the others are rehashed here, in batches. A message whose new key another message of its space already
has (a copy archived twice before this) keeps its old key, so nothing is lost or merged behind anyone's back.
"""
import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_LINE_END = re.compile(rb"\r\n|\r|\n")
BATCH = 500


def _key(raw: bytes) -> str:
    if raw.count(b"\r") != raw.count(b"\r\n") or raw.count(b"\n") != raw.count(b"\r\n"):
        raw = _LINE_END.sub(b"\r\n", raw)
    if not (raw.endswith(b"\r\n") and not raw.endswith(b"\r\n\r\n")):
        raw = raw.rstrip(b"\r\n") + b"\r\n"
    return hashlib.sha256(raw).hexdigest()


def upgrade():
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT m.id, m.space_id, m.sha256, r.raw FROM archive_messages m JOIN archive_raw r "
            "ON r.message_id = m.id WHERE m.id > :last ORDER BY m.id LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            return
        for message_id, space_id, old, raw in rows:
            new = _key(bytes(raw or b""))
            if new != old and bind.execute(sa.text(
                    "SELECT 1 FROM archive_messages WHERE space_id = :s AND sha256 = :k"),
                    {"s": space_id, "k": new}).first() is None:
                bind.execute(sa.text("UPDATE archive_messages SET sha256 = :k WHERE id = :id"),
                             {"k": new, "id": message_id})
        last = rows[-1][0]


def downgrade():
    pass  # the old keys were a function of the raw bytes, which are unchanged: nothing to undo that matters
