"""oauth: sign-in providers, their grants and sign-ins in progress; connections that sign in with one

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 11:49:52

Mail accounts, the reply mailbox and SMTP servers sign in with a password or an OAuth grant (issue 15). Existing
rows keep their password ("password"); a mail account that signs in with a provider has no password.
"""
from alembic import op
import sqlalchemy as sa

import webapp.timeutil


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('oauth_providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('tenant', sa.String(length=100), nullable=False),
    sa.Column('discovery_url', sa.String(length=500), nullable=False),
    sa.Column('authorization_endpoint', sa.String(length=500), nullable=False),
    sa.Column('token_endpoint', sa.String(length=500), nullable=False),
    sa.Column('scopes', sa.String(length=1000), nullable=False),
    sa.Column('app_scope', sa.String(length=300), nullable=False),
    sa.Column('mail_hosts', sa.Text(), nullable=False),
    sa.Column('app_mailboxes', sa.Text(), nullable=False),
    sa.Column('client_id', sa.String(length=300), nullable=False),
    sa.Column('client_secret_encrypted', sa.Text(), nullable=True),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('google', 'microsoft', 'generic')", name=op.f('ck_oauth_providers_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_providers')),
    sa.UniqueConstraint('name', name=op.f('uq_oauth_providers_name'))
    )
    op.create_table('oauth_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('scope', sa.String(length=1000), nullable=False),
    sa.Column('refresh_token_encrypted', sa.Text(), nullable=True),
    sa.Column('access_token_encrypted', sa.Text(), nullable=True),
    sa.Column('access_expires_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('problem', sa.Text(), nullable=True),
    sa.Column('problem_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('refreshed_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('ok', 'reconnect')", name=op.f('ck_oauth_grants_status')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_oauth_grants_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['provider_id'], ['oauth_providers.id'], name=op.f('fk_oauth_grants_provider_id_oauth_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_grants'))
    )
    with op.batch_alter_table('oauth_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_grants_provider_id'), ['provider_id'], unique=False)

    op.create_table('oauth_flows',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('ticket', sa.String(length=64), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('verifier_encrypted', sa.Text(), nullable=True),
    sa.Column('return_to', sa.String(length=500), nullable=False),
    sa.Column('draft', sa.JSON(), nullable=False),
    sa.Column('grant_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['oauth_grants.id'], name=op.f('fk_oauth_flows_grant_id_oauth_grants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provider_id'], ['oauth_providers.id'], name=op.f('fk_oauth_flows_provider_id_oauth_providers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_oauth_flows_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_flows')),
    sa.UniqueConstraint('state_hash', name=op.f('uq_oauth_flows_state_hash')),
    sa.UniqueConstraint('ticket', name=op.f('uq_oauth_flows_ticket'))
    )
    with op.batch_alter_table('mail_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_method', sa.String(length=20), nullable=False, server_default='password'))
        batch_op.add_column(sa.Column('oauth_grant_id', sa.Integer(), nullable=True))
        batch_op.alter_column('password_encrypted',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_mail_accounts_oauth_grant_id_oauth_grants'), 'oauth_grants', ['oauth_grant_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('mail_accounts', schema=None) as batch_op:
        batch_op.alter_column('auth_method', server_default=None)

    with op.batch_alter_table('reply_mailbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_method', sa.String(length=20), nullable=False, server_default='password'))
        batch_op.add_column(sa.Column('oauth_grant_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_reply_mailbox_oauth_grant_id_oauth_grants'), 'oauth_grants', ['oauth_grant_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('reply_mailbox', schema=None) as batch_op:
        batch_op.alter_column('auth_method', server_default=None)

    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_method', sa.String(length=20), nullable=False, server_default='password'))
        batch_op.add_column(sa.Column('oauth_grant_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_smtp_servers_oauth_grant_id_oauth_grants'), 'oauth_grants', ['oauth_grant_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.alter_column('auth_method', server_default=None)



def downgrade():
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_smtp_servers_oauth_grant_id_oauth_grants'), type_='foreignkey')
        batch_op.drop_column('oauth_grant_id')
        batch_op.drop_column('auth_method')

    with op.batch_alter_table('reply_mailbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_reply_mailbox_oauth_grant_id_oauth_grants'), type_='foreignkey')
        batch_op.drop_column('oauth_grant_id')
        batch_op.drop_column('auth_method')

    with op.batch_alter_table('mail_accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_mail_accounts_oauth_grant_id_oauth_grants'), type_='foreignkey')
        batch_op.alter_column('password_encrypted',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.drop_column('oauth_grant_id')
        batch_op.drop_column('auth_method')

    op.drop_table('oauth_flows')
    with op.batch_alter_table('oauth_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_grants_provider_id'))

    op.drop_table('oauth_grants')
    op.drop_table('oauth_providers')
