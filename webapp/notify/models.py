"""Watches, and the content events that notifications and daily reports are made from."""
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.mailnet import MailConnection
from webapp.timeutil import UTCDateTime, utcnow

SPACE, PAGE, BLOG = "space", "page", "blog"


class Watch(db.Model):
    """A person watching a page, a space's blog, or a whole space."""

    __tablename__ = "watches"
    __table_args__ = (
        UniqueConstraint("user_id", "scope", "space_id", "page_id", name="uq_watches_target"),
        CheckConstraint("scope IN ('space', 'page', 'blog')", name="scope"),
        Index("ix_watches_page", "page_id"),
        Index("ix_watches_space_scope", "space_id", "scope"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(db.String(8))
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    # 0 for space and blog watches, so the unique constraint holds on every database (NULLs never collide).
    page_id: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContentEvent(db.Model):
    """One change (page created or edited, comment added): recorded by the request, fanned out by a worker."""

    __tablename__ = "content_events"
    __table_args__ = (Index("ix_content_events_pending", "fanned_out_at", "send_after"),
                      Index("ix_content_events_created", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(db.String(12))  # created, edited, commented
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"))
    from_version: Mapped[int | None] = mapped_column()
    to_version: Mapped[int | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The highest user id whose mail is queued: each batch of watchers commits with it, so the senders start on
    # the first batch and a fan-out stopped half way goes on from there (none twice, none left out).
    fanned_out_to: Mapped[int | None] = mapped_column()
    recipients: Mapped[int] = mapped_column(default=0)
    # A fan-out that raised: counted, retried later, and after a few tries set aside ("failed events").
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(db.Text)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReplyMailbox(MailConnection, db.Model):
    """The mailbox replies to notifications go to (plus-addressed), fetched like a space's mail account."""

    __tablename__ = "reply_mailbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    address: Mapped[str] = mapped_column(db.String(254), default="")  # replies@example.org -> replies+TOKEN@
    password_encrypted: Mapped[str | None] = mapped_column(db.Text)
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_result: Mapped[str | None] = mapped_column(db.Text)


class ReplyReceipt(db.Model):
    """A reply already handled (by its bytes' hash), so a fetch cut short never makes a comment twice."""

    __tablename__ = "reply_receipts"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(db.String(64), unique=True)
    outcome: Mapped[str] = mapped_column(db.String(200))
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
