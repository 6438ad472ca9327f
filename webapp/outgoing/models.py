"""SMTP servers, the mail queue (one row per mail) and test sends."""
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.mailnet import Endpoint, SignIn
from webapp.timeutil import UTCDateTime, utcnow

NONE, STARTTLS, TLS = "none", "starttls", "tls"
SECURITY = {NONE: "None", STARTTLS: "STARTTLS", TLS: "SSL/TLS"}
DEFAULT_PORTS = {NONE: 25, STARTTLS: 587, TLS: 465}
REPLY_TO_POLICIES = {"none": "No Reply-To", "actor": "The person whose action caused the mail"}
DEFAULT_FROM_NAME = "${fullname} (Spacemail)"

QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
ACCOUNT = "account"  # invitations, password resets, address confirmations: their links are secrets
SEALED_KINDS = frozenset({ACCOUNT})  # kinds whose bodies are kept encrypted in the queue


class SmtpServer(SignIn, db.Model):
    """An SMTP server the site sends through; the default first, the others in order when it fails."""

    __tablename__ = "smtp_servers"
    __table_args__ = (CheckConstraint("security IN ('none', 'starttls', 'tls')", name="security"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(db.String(100), default="SMTP Server")
    from_address: Mapped[str] = mapped_column(db.String(254))
    from_name: Mapped[str] = mapped_column(db.String(200), default=DEFAULT_FROM_NAME)
    subject_prefix: Mapped[str] = mapped_column(db.String(100), default="")
    host: Mapped[str] = mapped_column(db.String(253))
    port: Mapped[int] = mapped_column()
    security: Mapped[str] = mapped_column(db.String(10), default=STARTTLS)
    username: Mapped[str | None] = mapped_column(db.String(254))
    password_encrypted: Mapped[str | None] = mapped_column(db.Text)
    timeout_seconds: Mapped[int] = mapped_column(default=30)
    reply_to_policy: Mapped[str] = mapped_column(db.String(10), default="none")
    trusted_ca_pem: Mapped[str | None] = mapped_column(db.Text)
    is_default: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def key(self) -> str:
        return str(self.id)

    @property
    def endpoint(self) -> Endpoint:
        """Where its password goes and how it is protected (the rule for asking again is mailnet's)."""
        return Endpoint.of("smtp", self.host, self.port, self.username, self.security, self.trusted_ca_pem,
                           self.auth_method)


class OutboundMail(db.Model):
    """One mail to one recipient. The row is the queue: Redis only wakes a worker (DESIGN.md §2)."""

    __tablename__ = "outbound_mail"
    __table_args__ = (
        Index("ix_outbound_mail_due", "state", "next_attempt_at"),
        CheckConstraint("state IN ('queued', 'sending', 'sent', 'failed')", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(db.String(20), default="notification")
    recipient: Mapped[str] = mapped_column(db.String(254))
    subject: Mapped[str] = mapped_column(db.String(500))
    body_text: Mapped[str] = mapped_column(db.Text)
    body_html: Mapped[str | None] = mapped_column(db.Text)
    # Extra headers chosen by whoever queued it (List-Id, In-Reply-To, References, List-Unsubscribe).
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    message_id: Mapped[str] = mapped_column(db.String(250))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # A mail pinned to one server (a test through the queue) gets no failover.
    server_key: Mapped[str | None] = mapped_column(db.String(20))
    state: Mapped[str] = mapped_column(db.String(10), default=QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(db.String(40))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(db.Text)
    sent_via: Mapped[str | None] = mapped_column(db.String(120))
    server_reply: Mapped[str | None] = mapped_column(db.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SmtpTest(db.Model):
    """One Send Test Email: what was asked, and the outcome with the SMTP conversation (secrets masked)."""

    __tablename__ = "smtp_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"), index=True)
    server_key: Mapped[str] = mapped_column(db.String(20), index=True)
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("outbound_mail.id", ondelete="SET NULL"))
    to_address: Mapped[str] = mapped_column(db.String(254))
    subject: Mapped[str] = mapped_column(db.String(500))
    body: Mapped[str] = mapped_column(db.Text)
    result: Mapped[dict | None] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
