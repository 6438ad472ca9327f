"""archive: a case-folded sender column for the sender filter; threads' subject keys keep "Fwd:"

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 13:00:00

SQLite's LIKE and lower() fold ASCII letters only, so "øster" did not find "Øster" nor "иванов" "Иванов"
(issue 16). The name and address, case-folded by Python (str.casefold), are stored beside them; existing rows
are filled here in batches. A forward is no longer a reply, so the subject key a thread is found by keeps its
"Fwd:" (webapp.archive.ingest.subject_key): the threads' keys are computed again.
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None
BATCH = 2000


def upgrade():
    with op.batch_alter_table('archive_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender_key', sa.Text(), nullable=False, server_default=''))
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, from_name, from_addr FROM archive_messages WHERE id > :last "
                                    "ORDER BY id LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            break
        bind.execute(sa.text("UPDATE archive_messages SET sender_key = :k WHERE id = :id"),
                     [{"id": i, "k": f"{name or ''} {addr or ''}".casefold()} for i, name, addr in rows])
        last = rows[-1][0]
    with op.batch_alter_table('archive_messages', schema=None) as batch_op:
        batch_op.alter_column('sender_key', server_default=None)
    from webapp.archive.ingest import subject_key

    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, subject, subject_key FROM archive_threads WHERE id > :last "
                                    "ORDER BY id LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            break
        changed = [{"id": i, "k": subject_key(subject)} for i, subject, key in rows if subject_key(subject) != key]
        if changed:
            bind.execute(sa.text("UPDATE archive_threads SET subject_key = :k WHERE id = :id"), changed)
        last = rows[-1][0]


def downgrade():
    with op.batch_alter_table('archive_messages', schema=None) as batch_op:
        batch_op.drop_column('sender_key')
