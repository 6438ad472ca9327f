"""notify: content events that fail to fan out are counted and set aside

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 09:10:00

A fan-out that raises was picked first again on every run and blocked every later notification (issue 14):
its attempts, last error and, after a few tries, when it was set aside ("failed events").
"""
from alembic import op
import sqlalchemy as sa

import webapp.timeutil


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('content_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('failed_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('content_events', schema=None) as batch_op:
        batch_op.alter_column('attempts', server_default=None)


def downgrade():
    with op.batch_alter_table('content_events', schema=None) as batch_op:
        batch_op.drop_column('failed_at')
        batch_op.drop_column('last_error')
        batch_op.drop_column('attempts')
