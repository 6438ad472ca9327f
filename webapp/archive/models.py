"""Mail accounts, their fetch runs, and the archive they fill."""
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, LargeBinary, UniqueConstraint, text
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from webapp.extensions import db
from webapp.mailnet import MailConnection
from webapp.timeutil import UTCDateTime, utcnow

POP, IMAP, POPS, IMAPS = "pop", "imap", "pops", "imaps"
PROTOCOLS = {POP: "POP", IMAP: "IMAP", POPS: "POPS (POP over TLS)", IMAPS: "IMAPS (IMAP over TLS)"}
DEFAULT_PORTS = {POP: 110, IMAP: 143, POPS: 995, IMAPS: 993}
# FetchRun states: queued -> running -> done | failed | skipped.
RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_FAILED, RUN_SKIPPED = "queued", "running", "done", "failed", "skipped"
RUN_ACTIVE = (RUN_QUEUED, RUN_RUNNING)
RUN_FINISHED = (RUN_DONE, RUN_FAILED, RUN_SKIPPED)


class MailAccount(MailConnection, db.Model):
    __tablename__ = "mail_accounts"
    __table_args__ = (
        UniqueConstraint("space_id", "name", name="uq_mail_accounts_space_name"),
        CheckConstraint("protocol IN ('pop', 'imap', 'pops', 'imaps')", name="protocol"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(db.String(100))
    description: Mapped[str] = mapped_column(db.Text, default="")
    password_encrypted: Mapped[str | None] = mapped_column(db.Text)  # None when it signs in with a provider
    enabled: Mapped[bool] = mapped_column(default=True)
    keep_on_server: Mapped[bool] = mapped_column(default=False)
    imap_uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    # The fetch lease: one fetch of an account at a time, and a crashed worker's lease runs out.
    lease_owner: Mapped[str | None] = mapped_column(db.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def uses_tls(self) -> bool:
        return self.protocol in (POPS, IMAPS)

    @property
    def is_imap(self) -> bool:
        return self.protocol in (IMAP, IMAPS)


class FetchRun(db.Model):
    """One fetch of one account: what the accounts table and the Mail tab show."""

    __tablename__ = "fetch_runs"
    __table_args__ = (Index("ix_fetch_runs_account_started", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(db.String(16), default="manual")
    state: Mapped[str] = mapped_column(db.String(16), default=RUN_QUEUED)
    total: Mapped[int | None] = mapped_column()
    fetched: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    deleted: Mapped[int] = mapped_column(default=0)
    unparsed: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error_class: Mapped[str | None] = mapped_column(db.String(40))
    error_message: Mapped[str | None] = mapped_column(db.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    account: Mapped[MailAccount] = relationship()

    @property
    def finished(self) -> bool:
        return self.state in RUN_FINISHED


class SeenMessage(db.Model):
    """What an account's server holds that the archive already has: (account, server id) dedupe."""

    __tablename__ = "seen_messages"
    __table_args__ = (UniqueConstraint("account_id", "server_id", name="uq_seen_messages_account_server"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"))
    server_id: Mapped[str] = mapped_column(db.String(200))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("archive_messages.id", ondelete="SET NULL"))
    deleted_on_server: Mapped[bool] = mapped_column(default=False)


class Thread(db.Model):
    __tablename__ = "archive_threads"
    __table_args__ = (Index("ix_archive_threads_space_last", "space_id", "last_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(db.Text, default="")
    subject_key: Mapped[str] = mapped_column(db.String(200), default="", index=True)
    message_count: Mapped[int] = mapped_column(default=0)
    last_date: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ThreadVisit(db.Model):
    """When a person last opened a thread: its page folds what they have seen and opens what came after."""

    __tablename__ = "archive_thread_visits"
    __table_args__ = (UniqueConstraint("user_id", "thread_id", name="uq_archive_thread_visits_user_thread"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    thread_id: Mapped[int] = mapped_column(ForeignKey("archive_threads.id", ondelete="CASCADE"), index=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(db.Model):
    """One archived message: fields parsed within limits; the raw bytes (the truth) live in MessageRaw."""

    __tablename__ = "archive_messages"
    __table_args__ = (
        UniqueConstraint("space_id", "sha256", name="uq_archive_messages_space_sha256"),
        Index("ix_archive_messages_space_date", "space_id", "date", "id"),
        Index("ix_archive_messages_space_msgid", "space_id", "message_id_header"),
        # The archive outside the trash, by date: what the Mail tab and newest-first search walk.
        Index("ix_archive_messages_space_live", "space_id", "date", "id", sqlite_where=text("deleted_at IS NULL"),
              postgresql_where=text("deleted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("mail_accounts.id", ondelete="SET NULL"))
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("archive_threads.id", ondelete="SET NULL"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("archive_messages.id", ondelete="SET NULL"), index=True)
    sha256: Mapped[str] = mapped_column(db.String(64))
    size: Mapped[int] = mapped_column()
    message_id_header: Mapped[str | None] = mapped_column(db.String(300))
    in_reply_to: Mapped[str | None] = mapped_column(db.String(300))
    subject: Mapped[str] = mapped_column(db.Text, default="")
    from_name: Mapped[str] = mapped_column(db.String(300), default="")
    from_addr: Mapped[str] = mapped_column(db.String(300), default="", index=True)
    # Name and address case-folded for the sender filter: SQLite's LIKE and lower() fold ASCII letters only.
    sender_key: Mapped[str] = mapped_column(db.Text, default="")
    to_addrs: Mapped[str] = mapped_column(db.Text, default="")
    cc_addrs: Mapped[str] = mapped_column(db.Text, default="")
    date: Mapped[datetime] = mapped_column(UTCDateTime)
    has_attachments: Mapped[bool] = mapped_column(default=False)
    attachments: Mapped[list] = mapped_column(db.JSON, default=list)
    body_text: Mapped[str] = deferred(mapped_column(db.Text, default=""))
    parse_problem: Mapped[str | None] = mapped_column(db.String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # In the space's trash since then (restorable for 30 days); None while in the archive.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    deleted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    thread: Mapped[Thread | None] = relationship()


class MessageRaw(db.Model):
    __tablename__ = "archive_raw"

    message_id: Mapped[int] = mapped_column(ForeignKey("archive_messages.id", ondelete="CASCADE"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class MessageRef(db.Model):
    """Each Message-ID a message names in In-Reply-To/References: finds children that came first."""

    __tablename__ = "archive_refs"
    __table_args__ = (Index("ix_archive_refs_space_ref", "space_id", "ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("archive_messages.id", ondelete="CASCADE"), index=True)
    ref: Mapped[str] = mapped_column(db.String(300))


class ConnectionTest(db.Model):
    """Form values a worker tests without saving an account; the password is encrypted and wiped after."""

    __tablename__ = "connection_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), unique=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    settings: Mapped[dict] = mapped_column(db.JSON)
    password_encrypted: Mapped[str | None] = mapped_column(db.Text)
    trusted_ca_pem: Mapped[str | None] = mapped_column(db.Text)
    result: Mapped[dict | None] = mapped_column(db.JSON)


class ArchiveImport(db.Model):
    """An uploaded mbox or .eml file waiting for (or done by) the import worker."""

    __tablename__ = "archive_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), index=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(db.String(255))
    path: Mapped[str] = mapped_column(db.String(500))
    imported: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
