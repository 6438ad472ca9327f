"""account links: invitations, password resets, email confirmations; feed tokens; the daily report's subject

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 17:34:52.385538

"""
from alembic import op
import sqlalchemy as sa

import webapp.timeutil


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('account_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('invited_by_id', sa.Integer(), nullable=True),
    sa.Column('space_id', sa.Integer(), nullable=True),
    sa.Column('role', sa.String(length=10), nullable=True),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('can_create_spaces', sa.Boolean(), nullable=False),
    sa.Column('sent_count', sa.Integer(), nullable=False),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'], name=op.f('fk_account_links_invited_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['space_id'], ['spaces.id'], name=op.f('fk_account_links_space_id_spaces'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_account_links_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_links')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_account_links_token_hash'))
    )
    with op.batch_alter_table('account_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_links_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_links_space_id'), ['space_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_links_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_nonce', sa.String(length=32), nullable=False, server_default=""))

    with op.batch_alter_table('site_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('space_admins_invite', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('daily_report_subject', sa.String(length=200), nullable=False,
                                      server_default="Your daily report"))




def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('feed_nonce')


    with op.batch_alter_table('site_settings', schema=None) as batch_op:
        batch_op.drop_column('daily_report_subject')
        batch_op.drop_column('space_admins_invite')

    with op.batch_alter_table('account_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_links_user_id'))
        batch_op.drop_index(batch_op.f('ix_account_links_space_id'))
        batch_op.drop_index(batch_op.f('ix_account_links_kind'))

    op.drop_table('account_links')

