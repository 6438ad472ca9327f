"""System administration: people, apps, site settings."""
from sqlalchemy import func, select

from webapp.auth import sessions
from webapp.auth.models import User
from webapp.errors import UserError
from webapp.extensions import db
from webapp.settings import SiteSettings


class AdminError(UserError):
    """An administration change that would break the site, said so the admin can choose otherwise."""


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.full_name, User.username)))


def _other_active_admins(user: User) -> int:
    return db.session.scalar(
        select(func.count(User.id)).where(User.is_admin.is_(True), User.active.is_(True), User.id != user.id)
    )


def set_active(actor: User, user: User, active: bool) -> None:
    if not active and user.id == actor.id:
        raise AdminError("You cannot disable your own account.")
    if not active and user.is_admin and not _other_active_admins(user):
        raise AdminError("The last active system administrator cannot be disabled.")
    if user.active and not active:
        sessions.end_all(user)  # signed out everywhere, at once
    user.active = active


def end_sessions(user: User) -> int:
    """An admin's "End sessions": every browser the person is signed in on is signed out."""
    return sessions.end_all(user)


def set_admin(actor: User, user: User, is_admin: bool) -> None:
    if not is_admin and user.id == actor.id:
        raise AdminError("You cannot remove your own administrator rights; ask another administrator.")
    if not is_admin and not _other_active_admins(user):
        raise AdminError("The site needs at least one active system administrator.")
    user.is_admin = is_admin


def set_can_create_spaces(user: User, allowed: bool) -> None:
    user.can_create_spaces = allowed


def set_mail_archiving(enabled: bool) -> SiteSettings:
    settings = SiteSettings.get()
    settings.mail_archiving_enabled = enabled
    return settings


def update_site_settings(site_title: str, base_url: str, time_zone: str, coalesce_minutes: int = 10,
                         report_hour: int = 8, space_admins_invite: bool | None = None,
                         report_subject: str | None = None) -> None:
    settings = SiteSettings.get()
    if report_subject:
        settings.daily_report_subject = report_subject
    if space_admins_invite is not None:
        settings.space_admins_invite = space_admins_invite
    settings.site_title, settings.base_url, settings.time_zone = site_title, base_url or "", time_zone
    settings.notify_coalesce_minutes, settings.daily_report_hour = coalesce_minutes, report_hour



def update_mail_archiving(allowlist: str, interval_minutes: int) -> None:
    settings = SiteSettings.get()
    settings.mail_host_allowlist = "\n".join(line.strip() for line in allowlist.splitlines() if line.strip())
    settings.fetch_interval_minutes = interval_minutes
