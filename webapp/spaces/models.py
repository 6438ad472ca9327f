"""Spaces and the roles people hold in them."""
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.auth.models import User
from webapp.extensions import db
from webapp.timeutil import UTCDateTime, utcnow

SITE, PERSONAL = "site", "personal"
VIEW, EDIT, ADMIN = "view", "edit", "admin"
ROLE_RANK = {VIEW: 1, EDIT: 2, ADMIN: 3}
ROLE_LABELS = {VIEW: "View", EDIT: "Edit", ADMIN: "Space admin"}


class Space(db.Model):
    __tablename__ = "spaces"
    __table_args__ = (CheckConstraint("kind IN ('site', 'personal')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(db.String(64), unique=True)
    name: Mapped[str] = mapped_column(db.String(200))
    description: Mapped[str] = mapped_column(db.Text, default="")
    kind: Mapped[str] = mapped_column(db.String(16))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    everyone_can_view: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    roles: Mapped[list["SpaceRole"]] = relationship(
        back_populates="space", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def is_personal(self) -> bool:
        return self.kind == PERSONAL

    def __repr__(self) -> str:
        return f"<Space {self.key}>"


class SpaceRole(db.Model):
    __tablename__ = "space_roles"
    __table_args__ = (
        UniqueConstraint("space_id", "user_id", name="uq_space_roles_space_user"),
        CheckConstraint("role IN ('view', 'edit', 'admin')", name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(db.String(16))
    # An option on top of the role: may move the space's archived mail to its trash (space admins always may).
    can_delete_mail: Mapped[bool] = mapped_column(default=False)

    space: Mapped[Space] = relationship(back_populates="roles")
    user: Mapped[User] = relationship()
