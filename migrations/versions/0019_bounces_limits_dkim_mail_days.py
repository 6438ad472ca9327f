"""bounces, suppression, per-server limits and pauses, DKIM keys, the queue's days

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 21:30:12.574474

"""
from alembic import op
import sqlalchemy as sa

import webapp.timeutil


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('bounces',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('received_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('mail_id', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=254), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=True),
    sa.Column('diagnostic', sa.String(length=1000), nullable=True),
    sa.Column('from_header', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bounces')),
    sa.UniqueConstraint('sha256', name=op.f('uq_bounces_sha256'))
    )
    with op.batch_alter_table('bounces', schema=None) as batch_op:
        batch_op.create_index('ix_bounces_address_received', ['address', 'received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_bounces_received_at'), ['received_at'], unique=False)

    op.create_table('dkim_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('selector', sa.String(length=63), nullable=False),
    sa.Column('private_key_encrypted', sa.Text(), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dkim_keys')),
    sa.UniqueConstraint('domain', name=op.f('uq_dkim_keys_domain'))
    )
    op.create_table('mail_days',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('sent', sa.Integer(), nullable=False),
    sa.Column('waited', sa.Integer(), nullable=False),
    sa.Column('retried', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('bounced', sa.Integer(), nullable=False),
    sa.Column('suppressed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_mail_days'))
    )
    op.create_table('mail_suppressions',
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('created_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_mail_suppressions'))
    )
    op.create_table('smtp_server_states',
    sa.Column('key', sa.String(length=20), nullable=False),
    sa.Column('paused_until', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('pause_reason', sa.String(length=500), nullable=True),
    sa.Column('pauses', sa.Integer(), nullable=False),
    sa.Column('window_start', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('window_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_smtp_server_states'))
    )
    op.create_table('bounce_mailbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('password_encrypted', sa.Text(), nullable=True),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('expire_days', sa.Integer(), nullable=False),
    sa.Column('last_fetch_at', webapp.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_result', sa.Text(), nullable=True),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.Column('host', sa.String(length=253), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=254), nullable=False),
    sa.Column('require_starttls', sa.Boolean(), nullable=False),
    sa.Column('folder', sa.String(length=200), nullable=False),
    sa.Column('trusted_ca_pem', sa.Text(), nullable=True),
    sa.Column('exclusive_mailbox', sa.Boolean(), nullable=False),
    sa.Column('auth_method', sa.String(length=20), nullable=False),
    sa.Column('oauth_grant_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['oauth_grant_id'], ['oauth_grants.id'], name=op.f('fk_bounce_mailbox_oauth_grant_id_oauth_grants'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bounce_mailbox'))
    )
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_per_minute', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('max_connections', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('outbound_mail', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbound_mail_state'), type_='check')
        batch_op.create_check_constraint('state', "state IN ('queued', 'sending', 'sent', 'failed', 'suppressed')")



def downgrade():
    op.execute("UPDATE outbound_mail SET state = 'failed' WHERE state = 'suppressed'")
    with op.batch_alter_table('outbound_mail', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbound_mail_state'), type_='check')
        batch_op.create_check_constraint('state', "state IN ('queued', 'sending', 'sent', 'failed')")
    with op.batch_alter_table('smtp_servers', schema=None) as batch_op:
        batch_op.drop_column('max_connections')
        batch_op.drop_column('max_per_minute')

    op.drop_table('bounce_mailbox')
    op.drop_table('smtp_server_states')
    op.drop_table('mail_suppressions')
    op.drop_table('mail_days')
    op.drop_table('dkim_keys')
    with op.batch_alter_table('bounces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bounces_received_at'))
        batch_op.drop_index('ix_bounces_address_received')

    op.drop_table('bounces')
