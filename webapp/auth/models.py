"""People who sign in."""
from datetime import datetime

from flask import current_app
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column
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
    # Bumped on password change or disable: the id in every other session stops matching.
    auth_version: Mapped[int] = mapped_column(default=1)
    # Email preferences (Profile › Notifications).
    notify_own_actions: Mapped[bool] = mapped_column(default=False)
    mail_format: Mapped[str] = mapped_column(db.String(8), default="html")  # html, text
    daily_report: Mapped[bool] = mapped_column(default=False)
    watch_own_edits: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def may_create_spaces(self) -> bool:
        return self.is_admin or self.can_create_spaces

    def get_id(self) -> str:
        return f"{self.id}.{self.auth_version}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.username}>"
