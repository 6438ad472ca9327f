"""Single-use links mailed to people: invitations, password resets and confirmations of a new email address.

A link's secret is 32 random bytes; only its sha256 is stored, and the mail that carries it sits in the queue
encrypted (kind "account"). Using a link spends it in one guarded UPDATE, so of two clicks only one counts;
resending gives the link a new secret, which ends the old one.
"""
import hashlib
import re
import secrets
from datetime import timedelta

from flask import current_app, render_template
from sqlalchemy import select, update

from webapp.auth import sessions
from webapp.auth.models import EMAIL, INVITE, RESET, AccountLink, User
from webapp.auth.services import AuthError, create_user
from webapp.extensions import db
from webapp.outgoing.models import ACCOUNT
from webapp.outgoing.queue import queue_mail
from webapp.settings import SiteSettings, base_url
from webapp.timeutil import utcnow

# The secret goes in the query string: the access log records the path only (Procfile's access-logformat).
PATHS = {INVITE: "/invite?token=", RESET: "/login/reset?token=", EMAIL: "/profile/email?token="}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lifetime(kind: str, by_admin: bool = False) -> timedelta:
    config = current_app.config
    if kind == INVITE:
        return timedelta(days=config["INVITATION_DAYS"])
    if kind == RESET:
        return timedelta(hours=config["ADMIN_RESET_HOURS"]) if by_admin else \
            timedelta(minutes=config["PASSWORD_RESET_MINUTES"])
    return timedelta(hours=config["EMAIL_CONFIRM_HOURS"])


def _email_taken(email: str, but: User | None = None) -> bool:
    query = select(User.id).where(User.email == email)
    if but is not None:
        query = query.where(User.id != but.id)
    return db.session.scalar(query) is not None


def _mail(link: AccountLink, template: str, subject: str, **context) -> None:
    """A new secret for `link`, and the mail that carries it (in the caller's transaction)."""
    token = secrets.token_urlsafe(32)
    link.token_hash = _hash(token)
    site = SiteSettings.get().site_title
    url = base_url() + PATHS[link.kind] + token
    body = render_template(f"auth/mail/{template}.txt", link=link, url=url, site=site, **context)
    queue_mail(link.email, subject.format(site=site), body, kind=ACCOUNT)


def _new(kind: str, email: str, by_admin: bool = False, **values) -> AccountLink:
    now = utcnow()
    link = AccountLink(kind=kind, email=email, created_at=now, sent_at=now, expires_at=now + _lifetime(kind, by_admin),
                       **values)
    db.session.add(link)
    return link


def live(kind: str, token: str | None) -> AccountLink | None:
    """The unused, unexpired, unrevoked link of this kind with this secret, or None."""
    if not token or len(token) > 100:
        return None
    link = db.session.scalar(select(AccountLink).where(AccountLink.kind == kind,
                                                       AccountLink.token_hash == _hash(token)))
    if link is None or link.used_at or link.revoked_at or link.expires_at <= utcnow():
        return None
    return link


def _spend(link: AccountLink) -> None:
    """Mark the link used; a second simultaneous use finds it spent and is refused."""
    spent = db.session.execute(update(AccountLink).where(AccountLink.id == link.id, AccountLink.used_at.is_(None),
                                                         AccountLink.revoked_at.is_(None))
                               .values(used_at=utcnow()).execution_options(synchronize_session=False))
    if spent.rowcount != 1:
        raise AuthError("This link has been used already.")
    db.session.refresh(link)


# Invitations

def invite(actor: User, email: str, *, space=None, role: str | None = None, is_admin: bool = False,
           can_create_spaces: bool = False) -> AccountLink:
    """Invite `email` (by mail, through the queue); a pending invitation to the same address is sent again."""
    if _email_taken(email):
        raise AuthError("Someone already has an account with that address: give them a role instead.")
    pending = db.session.scalar(select(AccountLink).where(
        AccountLink.kind == INVITE, AccountLink.email == email, AccountLink.used_at.is_(None),
        AccountLink.revoked_at.is_(None), AccountLink.expires_at > utcnow()))
    if pending is not None:
        if space is not None and pending.space_id not in (None, space.id):
            raise AuthError("That address is invited already, to another space: a system admin can see it.")
        pending.role = role or pending.role
        pending.space_id = getattr(space, "id", None) or pending.space_id
        pending.is_admin = pending.is_admin or is_admin
        pending.can_create_spaces = pending.can_create_spaces or can_create_spaces
        resend(pending, actor)
        return pending
    link = _new(INVITE, email, invited_by_id=actor.id, space_id=getattr(space, "id", None), role=role,
                is_admin=is_admin, can_create_spaces=can_create_spaces)
    _mail_invitation(link, actor, space)
    return link


def _mail_invitation(link: AccountLink, actor: User, space) -> None:
    _mail(link, "invite", "You are invited to {site}", actor=actor, space=space,
          days=current_app.config["INVITATION_DAYS"])


def resend(link: AccountLink, actor: User) -> None:
    """The invitation again, with a new link (the old one stops working) valid from now."""
    from webapp.spaces.models import Space

    now = utcnow()
    link.sent_at, link.expires_at, link.sent_count = now, now + _lifetime(INVITE), link.sent_count + 1
    link.invited_by_id = actor.id
    _mail_invitation(link, actor, db.session.get(Space, link.space_id) if link.space_id else None)


def revoke(link: AccountLink) -> None:
    link.revoked_at = utcnow()


def act(link: AccountLink, action: str, actor: User) -> str:
    """An invitation's Resend or Withdraw button; returns what the page says about it."""
    if action == "resend":
        resend(link, actor)
        return f"Invitation to {link.email} sent again with a new link; the old one no longer works."
    revoke(link)
    return f"Invitation to {link.email} withdrawn: its link no longer works."


def pending_invitations(space=None) -> list[AccountLink]:
    """Invitations not yet accepted nor revoked (expired ones too, so they can be resent), newest first."""
    query = select(AccountLink).where(AccountLink.kind == INVITE, AccountLink.used_at.is_(None),
                                      AccountLink.revoked_at.is_(None))
    if space is not None:
        query = query.where(AccountLink.space_id == space.id)
    return list(db.session.scalars(query.order_by(AccountLink.sent_at.desc(), AccountLink.id.desc())))


def invitation_of(link_id: int, space=None) -> AccountLink | None:
    link = db.session.get(AccountLink, link_id)
    if link is None or link.kind != INVITE or link.used_at or link.revoked_at:
        return None
    if space is not None and link.space_id != space.id:
        return None
    return link


def suggested_username(email: str) -> str:
    """A free username from the address's local part ("Ana.Lopez+x@…" -> "ana.lopez")."""
    base = re.sub(r"[^a-z0-9._-]", "", email.split("@")[0].split("+")[0].lower()).lstrip("._-")[:60] or "user"
    if len(base) < 2:
        base += "1"
    name, n = base, 1
    while db.session.scalar(select(User.id).where(User.username == name)):
        n += 1
        name = f"{base}{n}"
    return name


def accept(link: AccountLink, username: str, full_name: str, password: str) -> User:
    """The invited person's account, with the role the invitation carried; the caller commits."""
    from webapp.spaces.models import Space
    from webapp.spaces.services import grant

    _spend(link)
    if _email_taken(link.email):
        raise AuthError("Someone already has an account with this address; sign in instead.")
    user = create_user(username, link.email, full_name, password, is_admin=link.is_admin)
    user.can_create_spaces = link.can_create_spaces
    link.user_id = user.id
    space = db.session.get(Space, link.space_id) if link.space_id else None
    if space is not None and link.role:
        grant(space, user, link.role)
    return user


# Password resets

def request_reset(login: str) -> None:
    """"Forgot password?": a link to the account's address when there is such an active account, else nothing
    (the page says the same either way)."""
    from webapp.auth.services import find_user

    user = find_user(login)
    if user is not None and user.active:
        send_reset(user)


def send_reset(user: User, by_admin: bool = False) -> AccountLink:
    """A new reset link for `user` (earlier unused ones stop working)."""
    _end_links(user, RESET)
    link = _new(RESET, user.email, by_admin=by_admin, user_id=user.id)
    hours = _lifetime(RESET, by_admin).total_seconds() / 3600
    valid = f"{hours:g} hours" if hours >= 2 else f"{hours * 60:g} minutes"
    _mail(link, "reset", "Set a new password for {site}", user=user, valid=valid, by_admin=by_admin)
    return link


def _end_links(user: User, kind: str) -> None:
    db.session.execute(update(AccountLink).where(AccountLink.user_id == user.id, AccountLink.kind == kind,
                                                 AccountLink.used_at.is_(None), AccountLink.revoked_at.is_(None))
                       .values(revoked_at=utcnow()).execution_options(synchronize_session=False))


def reset_password(link: AccountLink, password: str) -> User:
    """The new password set, and every session of the person ended; the caller commits and signs them in."""
    user = db.session.get(User, link.user_id)
    if user is None or not user.active or user.email != link.email:
        raise AuthError("This link is no longer valid.")
    _spend(link)
    user.set_password(password)
    sessions.end_all(user)
    _end_links(user, RESET)
    return user


# A change of one's own email address

def request_email_change(user: User, email: str) -> AccountLink:
    """A confirmation link to the new address; the address changes only when it is opened."""
    if _email_taken(email, but=user):
        raise AuthError("Another person already uses that email address.")
    _end_links(user, EMAIL)
    link = _new(EMAIL, email, user_id=user.id)
    _mail(link, "email_change", "Confirm your new address for {site}", user=user,
          hours=current_app.config["EMAIL_CONFIRM_HOURS"])
    return link


def pending_email(user: User) -> AccountLink | None:
    return db.session.scalar(select(AccountLink).where(
        AccountLink.user_id == user.id, AccountLink.kind == EMAIL, AccountLink.used_at.is_(None),
        AccountLink.revoked_at.is_(None), AccountLink.expires_at > utcnow()).order_by(AccountLink.id.desc()))


def cancel_email_change(user: User) -> None:
    _end_links(user, EMAIL)


def confirm_email(link: AccountLink) -> User:
    """The new address in effect; the old one is told (so a hijacked session cannot move an account quietly)."""
    user = db.session.get(User, link.user_id)
    if user is None or not user.active:
        raise AuthError("This link is no longer valid.")
    if _email_taken(link.email, but=user):
        raise AuthError("Another person uses that address now; choose another one in your profile.")
    _spend(link)
    old, user.email = user.email, link.email
    site = SiteSettings.get().site_title
    queue_mail(old, f"Your address for {site} was changed",
               render_template("auth/mail/email_changed.txt", user=user, old=old, site=site,
                               url=base_url() + "/login"), kind=ACCOUNT)
    return user
