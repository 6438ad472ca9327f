"""thread visits: what a reader has seen of a thread, so its page opens what is new

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 18:10:34.391577

"""
from alembic import op
import sqlalchemy as sa

import webapp.timeutil


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('archive_thread_visits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('thread_id', sa.Integer(), nullable=False),
    sa.Column('seen_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['thread_id'], ['archive_threads.id'], name=op.f('fk_archive_thread_visits_thread_id_archive_threads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_archive_thread_visits_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_archive_thread_visits')),
    sa.UniqueConstraint('user_id', 'thread_id', name='uq_archive_thread_visits_user_thread')
    )
    with op.batch_alter_table('archive_thread_visits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_archive_thread_visits_thread_id'), ['thread_id'], unique=False)




def downgrade():

    with op.batch_alter_table('archive_thread_visits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_archive_thread_visits_thread_id'))

    op.drop_table('archive_thread_visits')

