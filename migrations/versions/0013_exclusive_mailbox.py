"""archive: a mailbox can be marked Spacemail's alone, so a plain EXPUNGE may remove what was fetched

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 12:50:00

IMAP servers without UIDPLUS or MOVE (GNU Mailutils) could never have fetched mail removed, and the failure
stopped archiving (issue 16). Existing mailboxes are not marked: they keep their mail on such a server.
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    for table in ('mail_accounts', 'reply_mailbox'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('exclusive_mailbox', sa.Boolean(), nullable=False, server_default=sa.false()))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('exclusive_mailbox', server_default=None)


def downgrade():
    for table in ('reply_mailbox', 'mail_accounts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('exclusive_mailbox')
