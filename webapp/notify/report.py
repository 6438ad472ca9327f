"""The daily report: once a day at the hour the system admin chose, what changed in what each person watches."""
from datetime import timedelta
from zoneinfo import ZoneInfo

from flask import render_template
from sqlalchemy import func, or_, select, update

from webapp.auth.models import User
from webapp.content.models import Page
from webapp.extensions import db
from webapp.notify.audience import viewer_ids
from webapp.notify.models import BLOG, PAGE, SPACE, ContentEvent, Watch
from webapp.outgoing.queue import queue_mail
from webapp.settings import SiteSettings, base_url
from webapp.spaces.models import Space
from webapp.timeutil import utcnow


def send_if_due() -> int:
    """Called every minute: at the report hour, once per site-local day, queue every report."""
    settings = SiteSettings.get()
    local = utcnow().astimezone(ZoneInfo(settings.time_zone or "UTC"))
    today = local.date().isoformat()
    if local.hour != settings.daily_report_hour or settings.daily_report_sent_on == today:
        return 0
    claimed = db.session.execute(update(SiteSettings).where(
        SiteSettings.id == 1, or_(SiteSettings.daily_report_sent_on.is_(None),
                                  SiteSettings.daily_report_sent_on != today))
        .values(daily_report_sent_on=today)).rowcount
    if not claimed:
        return 0  # another worker took today's report
    count = send_reports()
    db.session.commit()
    return count


def _recent_events(hours: int) -> list:
    """(event, page, space) of the last `hours`, sensitive pages left out, in the report's order."""
    since = utcnow() - timedelta(hours=hours)
    return list(db.session.execute(select(ContentEvent, Page, Space).join(Page, Page.id == ContentEvent.page_id)
                                     .join(Space, Space.id == ContentEvent.space_id)
                                     .where(ContentEvent.created_at >= since, Page.sensitive.is_(False))
                                     .order_by(Space.name, Page.title, ContentEvent.id)).all())


def send_reports(since_hours: int = 24) -> int:
    events = _recent_events(since_hours)
    if not events:
        return 0
    viewers = {space.id: viewer_ids(space) for _e, _p, space in events}
    count = 0
    for user in db.session.scalars(select(User).where(User.daily_report.is_(True), User.active.is_(True))):
        groups = _report_for(user, events, viewers)
        if groups:
            text = render_template("notify/mail/daily_report.txt", user=user, groups=groups, base=base_url())
            html = render_template("notify/mail/daily_report.html", user=user, groups=groups, base=base_url()) \
                if user.mail_format == "html" else None
            queue_mail(user.email, report_subject(), text, html, kind="report")
            count += 1
    return count


def report_subject() -> str:
    return SiteSettings.get().daily_report_subject or "Your daily report"


def next_report_at():
    """When the next daily report goes out (UTC): today's hour if still ahead, else tomorrow's."""
    settings = SiteSettings.get()
    zone = ZoneInfo(settings.time_zone or "UTC")
    local = utcnow().astimezone(zone)
    at = local.replace(hour=settings.daily_report_hour, minute=0, second=0, microsecond=0)
    if at <= local or settings.daily_report_sent_on == local.date().isoformat():
        at = (at + timedelta(days=1)).replace(hour=settings.daily_report_hour)
    return at.astimezone(ZoneInfo("UTC"))


def preview(user) -> dict:
    """What `user`'s report would say if it went out now (the last 24 hours), and who gets one."""
    events = _recent_events(24)
    groups = _report_for(user, events, {space.id: viewer_ids(space) for _e, _p, space in events})
    text = render_template("notify/mail/daily_report.txt", user=user, groups=groups, base=base_url()) \
        if groups else None
    recipients = db.session.scalar(select(func.count(User.id)).where(User.daily_report.is_(True),
                                                                     User.active.is_(True)))
    return {"subject": report_subject(), "text": text, "recipients": recipients, "at": next_report_at()}


def _report_for(user, events, viewers) -> dict:
    """{space: {page: [event, ...]}} for what `user` watches and may view; empty when nothing changed."""
    watches = db.session.scalars(select(Watch).where(Watch.user_id == user.id)).all()
    pages = {w.page_id for w in watches if w.scope == PAGE}
    spaces = {w.space_id for w in watches if w.scope == SPACE}
    blogs = {w.space_id for w in watches if w.scope == BLOG}
    groups: dict = {}
    for event, page, space in events:
        allowed = viewers[space.id]
        if allowed is not None and user.id not in allowed:
            continue
        if page.id in pages or space.id in spaces or (page.is_blog and space.id in blogs):
            groups.setdefault(space, {}).setdefault(page, []).append(event)
    return groups
