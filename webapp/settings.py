"""Site-wide settings, one row. Every package reads them, so they live outside any blueprint."""
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import g, has_request_context
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.timeutil import UTCDateTime


class SiteSettings(db.Model):
    __tablename__ = "site_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_title: Mapped[str] = mapped_column(db.String(100), default="Spacemail")
    base_url: Mapped[str] = mapped_column(db.String(300), default="")
    time_zone: Mapped[str] = mapped_column(db.String(64), default="UTC")
    mail_archiving_enabled: Mapped[bool] = mapped_column(default=True)
    # Networks and host names mail accounts may reach besides public addresses, one per line.
    mail_host_allowlist: Mapped[str] = mapped_column(db.Text, default="")
    fetch_interval_minutes: Mapped[int] = mapped_column(default=30)
    # Minutes to wait before each retry of a mail the server deferred; then it goes to the error queue.
    mail_retry_minutes: Mapped[str] = mapped_column(db.String(100), default="1, 5, 15, 60, 240")
    # Changes to one page by one person within this many minutes become one notification (0: at once).
    notify_coalesce_minutes: Mapped[int] = mapped_column(default=10)
    daily_report_hour: Mapped[int] = mapped_column(default=8)  # site time zone
    daily_report_subject: Mapped[str] = mapped_column(db.String(200), default="Your daily report")
    # Space admins may invite people by email to their own spaces (system admins always may invite).
    space_admins_invite: Mapped[bool] = mapped_column(default=False)
    daily_report_sent_on: Mapped[str | None] = mapped_column(db.String(10))  # the site-local date, YYYY-MM-DD
    # The first-run link: only a hash is kept, and it is cleared when the first admin exists.
    setup_token_hash: Mapped[str | None] = mapped_column(db.String(128))
    last_sweep_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @classmethod
    def get(cls) -> "SiteSettings":
        """The one row, made on first use (looked up once a request: date filters ask for it per row)."""
        if has_request_context():
            row = g.get("site_settings")
            if row is not None and row in db.session:
                return row
        row = db.session.get(cls, 1)
        if row is None:
            row = cls(id=1)
            db.session.add(row)
            db.session.flush()
        if has_request_context():
            g.site_settings = row
        return row


def retry_schedule(settings: SiteSettings | None = None) -> list[int]:
    """The mail queue's backoff in minutes, e.g. [1, 5, 15, 60, 240]."""
    text = (settings or SiteSettings.get()).mail_retry_minutes or "1, 5, 15, 60, 240"
    return [int(part) for part in text.replace(",", " ").split()]


def base_url() -> str:
    """Where links in emails point: the admin's setting, else SPACEMAIL_BASE_URL; never a request's Host."""
    from flask import current_app

    return SiteSettings.get().base_url or current_app.config["BASE_URL"]


def format_local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time in the reader's time zone (their profile's, else the site's)."""
    if value is None:
        return "never"
    return value.astimezone(reader_zone()).strftime(fmt)


def reader_zone():
    """The reader's zone, looked up once a request (a list formats a date per row)."""
    from flask_login import current_user

    if has_request_context() and "reader_zone" in g:
        return g.reader_zone
    zone = ZoneInfo(getattr(current_user, "time_zone", "") or SiteSettings.get().time_zone)
    if has_request_context():
        g.reader_zone = zone
    return zone
