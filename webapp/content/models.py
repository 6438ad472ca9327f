"""Pages and blog posts in a space, their versions and comments."""
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.auth.models import User
from webapp.extensions import db
from webapp.timeutil import UTCDateTime, utcnow

PAGE, BLOG = "page", "blog"


class Page(db.Model):
    """A page or a blog post; `body` is Markdown, the current version's."""

    __tablename__ = "pages"
    __table_args__ = (CheckConstraint("kind IN ('page', 'blog')", name="kind"),
                      Index("ix_pages_space_kind_created", "space_id", "kind", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(db.String(8), default=PAGE)
    title: Mapped[str] = mapped_column(db.String(255))
    body: Mapped[str] = mapped_column(db.Text, default="")
    version: Mapped[int] = mapped_column(default=1)
    # Notifications of a sensitive page carry its title and a link only, and daily reports leave it out.
    sensitive: Mapped[bool] = mapped_column(default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])

    @property
    def is_blog(self) -> bool:
        return self.kind == BLOG


class PageVersion(db.Model):
    __tablename__ = "page_versions"
    __table_args__ = (UniqueConstraint("page_id", "version", name="uq_page_versions_page_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    title: Mapped[str] = mapped_column(db.String(255))
    body: Mapped[str] = mapped_column(db.Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    author: Mapped[User | None] = relationship()


class Comment(db.Model):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_page_created", "page_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(db.Text)
    via: Mapped[str] = mapped_column(db.String(8), default="web")  # web, email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    author: Mapped[User | None] = relationship()
