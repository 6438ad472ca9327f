"""People who sign in."""
from datetime import datetime

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.timeutil import UTCDateTime, utcnow


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(db.String(64), unique=True)
    email: Mapped[str] = mapped_column(db.String(254), unique=True)
    full_name: Mapped[str] = mapped_column(db.String(200))
    password_hash: Mapped[str] = mapped_column(db.String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    can_create_spaces: Mapped[bool] = mapped_column(default=False)
    time_zone: Mapped[str] = mapped_column(db.String(64), default="")  # "" follows the site's
    # No longer read: sessions are rows (UserSession) since migration 0009; kept so old databases need no rewrite.
    auth_version: Mapped[int] = mapped_column(default=1)
    # Email preferences (Profile › Notifications).
    notify_own_actions: Mapped[bool] = mapped_column(default=False)
    mail_format: Mapped[str] = mapped_column(db.String(8), default="html")  # html, text
    daily_report: Mapped[bool] = mapped_column(default=False)
    watch_own_edits: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Mixed into the person's feed token (an HMAC with the secret key): a new value ends every old feed link.
    feed_nonce: Mapped[str] = mapped_column(db.String(32), default="")

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def may_create_spaces(self) -> bool:
        return self.is_admin or self.can_create_spaces

    session_key = None  # the secret of the session this request runs in (set by webapp.auth.sessions)

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and remember cookies: the user and their session's secret."""
        return f"{self.id}.{self.session_key or ''}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class UserSession(db.Model):
    """One sign-in, held on the server: its id is in the session and remember cookies, and deleting the row signs
    that browser out (a copied cookie is worth nothing after sign-out, a password change or an admin's word)."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Only a hash of the cookie's secret is kept, so a copy of the database signs nobody in.
    key_hash: Mapped[str] = mapped_column(db.String(64), unique=True)
    remember: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_agent: Mapped[str] = mapped_column(db.String(300), default="")
    address: Mapped[str] = mapped_column(db.String(64), default="")


INVITE, RESET, EMAIL = "invite", "reset", "email"


class AccountLink(db.Model):
    """A single-use link mailed to one address: an invitation, a password reset, or the confirmation of a new email
    address. Only a hash of its secret is kept; using, resending or revoking it ends the link it was."""

    __tablename__ = "account_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(db.String(10), index=True)  # invite, reset, email
    token_hash: Mapped[str] = mapped_column(db.String(64), unique=True)
    email: Mapped[str] = mapped_column(db.String(254))  # where the link was sent
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # An invitation may come with a role in one space (a space admin's invitation always does).
    space_id: Mapped[int | None] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    role: Mapped[str | None] = mapped_column(db.String(10))
    is_admin: Mapped[bool] = mapped_column(default=False)
    can_create_spaces: Mapped[bool] = mapped_column(default=False)
    sent_count: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_id])
    user: Mapped[User | None] = relationship(foreign_keys=[user_id])
