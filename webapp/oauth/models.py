"""Sign-in providers (OAuth 2.0 authorization servers), the grants they gave, and sign-ins in progress."""
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.timeutil import UTCDateTime, utcnow

GOOGLE, MICROSOFT, GENERIC = "google", "microsoft", "generic"
KINDS = {GOOGLE: "Google", MICROSOFT: "Microsoft 365", GENERIC: "Another OAuth 2.0 / OpenID Connect provider"}
# A grant is delegated (a person signed in and consented) or app-only (client credentials: no person).
DELEGATED, APP_ONLY = "delegated", "app"
# A grant works (ok), or its refresh token was refused and someone must sign in again (reconnect).
GRANT_OK, GRANT_RECONNECT = "ok", "reconnect"


class OAuthProvider(db.Model):
    """An authorization server the site's mailboxes and SMTP servers may sign in with."""

    __tablename__ = "oauth_providers"
    __table_args__ = (CheckConstraint("kind IN ('google', 'microsoft', 'generic')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(db.String(100), unique=True)
    kind: Mapped[str] = mapped_column(db.String(16))
    tenant: Mapped[str] = mapped_column(db.String(100), default="")  # Microsoft: tenant id, organizations, common
    discovery_url: Mapped[str] = mapped_column(db.String(500), default="")
    authorization_endpoint: Mapped[str] = mapped_column(db.String(500), default="")
    token_endpoint: Mapped[str] = mapped_column(db.String(500), default="")
    scopes: Mapped[str] = mapped_column(db.String(1000), default="")
    app_scope: Mapped[str] = mapped_column(db.String(300), default="")  # client credentials ("app-only")
    # Where its tokens may be sent (one host name a line): a bearer token goes to the provider's mail servers only.
    mail_hosts: Mapped[str] = mapped_column(db.Text, default="")
    # The mailboxes app-only access may open, one address a line (none: app-only is not offered).
    app_mailboxes: Mapped[str] = mapped_column(db.Text, default="")
    client_id: Mapped[str] = mapped_column(db.String(300))
    client_secret_encrypted: Mapped[str | None] = mapped_column(db.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuthGrant(db.Model):
    """What one sign-in gave: tokens (encrypted) for one mailbox address, refreshed by workers before they expire."""

    __tablename__ = "oauth_grants"
    __table_args__ = (CheckConstraint("status IN ('ok', 'reconnect')", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("oauth_providers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(db.String(10), default=DELEGATED)
    address: Mapped[str] = mapped_column(db.String(254), default="")  # the mailbox the person signed in as
    scope: Mapped[str] = mapped_column(db.String(1000), default="")
    refresh_token_encrypted: Mapped[str | None] = mapped_column(db.Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(db.Text)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(db.String(10), default=GRANT_OK)
    problem: Mapped[str | None] = mapped_column(db.Text)  # the last refresh failure, in words (no token in it)
    problem_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The refresh lease: one worker refreshes a grant at a time, so a rotated refresh token is never lost.
    lease_owner: Mapped[str | None] = mapped_column(db.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    provider: Mapped[OAuthProvider] = relationship(lazy="joined")

    @property
    def needs_reconnect(self) -> bool:
        return self.status == GRANT_RECONNECT


class OAuthFlow(db.Model):
    """One "Connect" in progress: the state (hashed) bound to the person's session, the PKCE verifier (encrypted),
    the form it came from (without any password), and the grant it ended with."""

    __tablename__ = "oauth_flows"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(db.String(64), unique=True)
    ticket: Mapped[str] = mapped_column(db.String(64), unique=True)  # names the finished sign-in in the form
    provider_id: Mapped[int] = mapped_column(ForeignKey("oauth_providers.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column()  # the UserSession it was started from
    verifier_encrypted: Mapped[str | None] = mapped_column(db.Text)
    return_to: Mapped[str] = mapped_column(db.String(500))
    draft: Mapped[dict] = mapped_column(JSON, default=dict)
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_grants.id", ondelete="CASCADE"))
    error: Mapped[str | None] = mapped_column(db.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    provider: Mapped[OAuthProvider] = relationship()
    grant: Mapped[OAuthGrant | None] = relationship()
