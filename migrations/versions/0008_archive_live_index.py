"""archive: an index of the messages not in the trash, by space and date

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 10:45:00

The Mail tab and newest-first search walk a space's messages by date, skipping the trash: with deleted_at in
a partial index's condition the walk reads the index alone instead of every row (issue 7, B4/B5).
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_archive_messages_space_live', 'archive_messages', ['space_id', 'date', 'id'], unique=False,
                    sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))


def downgrade():
    op.drop_index('ix_archive_messages_space_live', table_name='archive_messages')
