"""Telling the people who can fix it, once, that a sign-in with a provider needs reconnecting; and the health
list Administration shows (every connection whose sign-in needs a person)."""
import logging
from dataclasses import dataclass

from sqlalchemy import func, select

from webapp.archive.models import MailAccount
from webapp.auth.models import User
from webapp.extensions import db
from webapp.notify.models import ReplyMailbox
from webapp.oauth.credentials import grant_of
from webapp.oauth.models import GRANT_RECONNECT, OAuthGrant
from webapp.oauth.providers import connection_tables
from webapp.outgoing.models import SmtpServer
from webapp.outgoing.queue import QueueError, queue_mail
from webapp.settings import base_url
from webapp.signals import grant_needs_reconnect
from webapp.spaces.models import ADMIN, Space, SpaceRole

log = logging.getLogger(__name__)


@dataclass
class Broken:
    """One connection whose sign-in needs reconnecting: what it is, where it is fixed, who may fix it."""

    what: str
    path: str
    grant: OAuthGrant
    space_id: int | None = None


def broken(grant_ids=None) -> list[Broken]:
    """Every connection signing in with a grant that needs reconnecting (or with the given grants)."""
    ids = select(OAuthGrant.id).where(OAuthGrant.status == GRANT_RECONNECT) if grant_ids is None else grant_ids
    found = []
    for account, space in db.session.execute(select(MailAccount, Space).join(Space, Space.id == MailAccount.space_id)
                                             .where(MailAccount.oauth_grant_id.in_(ids))):
        found.append(Broken(f"Mail account {account.name} in {space.name}",
                            f"/spaces/{space.key}/mail-accounts/{account.id}/edit", grant_of(account), space.id))
    for box in db.session.scalars(select(ReplyMailbox).where(ReplyMailbox.oauth_grant_id.in_(ids))):
        found.append(Broken("The reply-by-email mailbox", "/admin/mail-servers/replies", grant_of(box)))
    for server in db.session.scalars(select(SmtpServer).where(SmtpServer.oauth_grant_id.in_(ids))):
        found.append(Broken(f"SMTP server {server.name}", f"/admin/mail-servers/{server.id}/edit",
                            grant_of(server)))
    return found


def count_broken() -> int:
    """How many connections sign in with a grant that needs reconnecting: one count per table, no rows loaded
    (Administration's tabs show it on every page)."""
    waiting = select(OAuthGrant.id).where(OAuthGrant.status == GRANT_RECONNECT)
    return sum(db.session.scalar(select(func.count()).select_from(t).where(t.c.oauth_grant_id.in_(waiting))) or 0
               for t in connection_tables())


def _fixers(item: Broken) -> list[User]:
    """Space admins fix their space's mail accounts; system admins fix the site's own connections (and may
    fix any)."""
    query = select(User).where(User.active.is_(True), User.is_admin.is_(True))
    if item.space_id is not None:
        query = select(User).join(SpaceRole, SpaceRole.user_id == User.id).where(
            User.active.is_(True), SpaceRole.space_id == item.space_id, SpaceRole.role == ADMIN)
    return list(db.session.scalars(query))


def tell(grant: OAuthGrant, **_kwargs) -> None:
    """One mail to each person who can reconnect what signs in with `grant`, listing what stopped working."""
    items = broken([grant.id])
    people: dict[int, tuple[User, list[Broken]]] = {}
    for item in items:
        for user in _fixers(item):
            people.setdefault(user.id, (user, []))[1].append(item)
    site = base_url()
    for user, theirs in people.values():
        lines = "\n".join(f"- {item.what}: {site}{item.path}" for item in theirs)
        body = (f"Hello {user.full_name},\n\nThe sign-in with {grant.provider.name} stopped working "
                f"({grant.problem or 'the provider refused it'}), so this no longer fetches or sends mail:\n\n{lines}"
                "\n\nOpen it, press Connect, sign in again and save. Nothing is lost meanwhile: mail waits on the "
                "server and in the queue.\n")
        try:
            queue_mail(user.email, f"Reconnect needed: {grant.provider.name} sign-in", body, kind="notice")
        except QueueError:
            log.warning("cannot tell user %s about grant %s: no valid address", user.id, grant.id)
    db.session.commit()


def connect() -> None:
    grant_needs_reconnect.connect(tell)
