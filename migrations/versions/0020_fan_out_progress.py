"""fan-out progress: the highest user id whose notification is queued, so a fan-out commits batch by batch

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 04:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('content_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fanned_out_to', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('content_events', schema=None) as batch_op:
        batch_op.drop_column('fanned_out_to')
