"""SMTP servers, the mail queue (one row per mail) and test sends."""
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, LargeBinary
from sqlalchemy.orm import Mapped, deferred, mapped_column

from webapp.extensions import db
from webapp.mailnet import Endpoint, MailConnection, SignIn
from webapp.timeutil import UTCDateTime, utcnow

NONE, STARTTLS, TLS = "none", "starttls", "tls"
SECURITY = {NONE: "None", STARTTLS: "STARTTLS", TLS: "SSL/TLS"}
DEFAULT_PORTS = {NONE: 25, STARTTLS: 587, TLS: 465}
REPLY_TO_POLICIES = {"none": "No Reply-To", "actor": "The person whose action caused the mail"}
DEFAULT_FROM_NAME = "${fullname} (Spacemail)"

QUEUED, SENDING, SENT, FAILED, SUPPRESSED = "queued", "sending", "sent", "failed", "suppressed"
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
    # Provider limits (0: none). Mail over a limit waits for it; it is never failed for it.
    max_per_minute: Mapped[int] = mapped_column(default=0)
    max_connections: Mapped[int] = mapped_column(default=0)
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
        CheckConstraint("state IN ('queued', 'sending', 'sent', 'failed', 'suppressed')", name="state"),
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


class SmtpServerState(db.Model):
    """What the senders share about one server (by key, so the one from configuration too): a pause after it
    refused a whole session, and the current minute's count for its rate limit."""

    __tablename__ = "smtp_server_states"

    key: Mapped[str] = mapped_column(db.String(20), primary_key=True)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(db.String(500))
    pauses: Mapped[int] = mapped_column(default=0)  # in a row: each pause is longer than the last
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_count: Mapped[int] = mapped_column(default=0)


class MailDay(db.Model):
    """What the mail queue did on one day (UTC): the chart on the queue page, kept after the rows are gone."""

    __tablename__ = "mail_days"

    day: Mapped[str] = mapped_column(db.String(10), primary_key=True)  # YYYY-MM-DD
    sent: Mapped[int] = mapped_column(default=0)
    waited: Mapped[int] = mapped_column(default=0)
    retried: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    bounced: Mapped[int] = mapped_column(default=0)
    suppressed: Mapped[int] = mapped_column(default=0)


class DkimKey(db.Model):
    """A DKIM signing key for one sending domain; its private half encrypted at rest like every secret."""

    __tablename__ = "dkim_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(db.String(253), unique=True)
    selector: Mapped[str] = mapped_column(db.String(63))
    private_key_encrypted: Mapped[str] = mapped_column(db.Text)
    public_key: Mapped[str] = mapped_column(db.Text)  # base64 DER, as the DNS record carries it
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BounceMailbox(MailConnection, db.Model):
    """Where bounces come back: the envelope sender of every mail is bounces+<mail id>-<signature>@ its domain."""

    __tablename__ = "bounce_mailbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    address: Mapped[str] = mapped_column(db.String(254), default="")
    password_encrypted: Mapped[str | None] = mapped_column(db.Text)
    threshold: Mapped[int] = mapped_column(default=4)  # score at which an address is suppressed
    expire_days: Mapped[int] = mapped_column(default=30)  # bounces older than this no longer count
    last_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_result: Mapped[str | None] = mapped_column(db.Text)


HARD, SOFT = "hard", "soft"


class Bounce(db.Model):
    """One message that came back to the bounce mailbox, matched to its mail or kept unmatched, never dropped."""

    __tablename__ = "bounces"
    __table_args__ = (Index("ix_bounces_address_received", "address", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(db.String(64), unique=True)  # a fetch cut short never counts one twice
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    outcome: Mapped[str] = mapped_column(db.String(20))  # hard, soft, auto_reply, not_a_bounce, unmatched, forged
    mail_id: Mapped[int | None] = mapped_column()  # the sent row is forgotten after a week; the id stays
    address: Mapped[str | None] = mapped_column(db.String(254))
    status: Mapped[str | None] = mapped_column(db.String(20))  # 5.1.1
    diagnostic: Mapped[str | None] = mapped_column(db.String(1000))
    from_header: Mapped[str] = mapped_column(db.String(300), default="")
    subject: Mapped[str] = mapped_column(db.String(300), default="")
    counted: Mapped[bool] = mapped_column(default=True)  # False once the address is given another chance
    raw: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))  # kept for the ones not matched


class Suppression(db.Model):
    """An address no mail goes to until it is removed here or its owner asks to try again."""

    __tablename__ = "mail_suppressions"

    address: Mapped[str] = mapped_column(db.String(254), primary_key=True)  # lower case
    reason: Mapped[str] = mapped_column(db.String(1000))
    score: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
