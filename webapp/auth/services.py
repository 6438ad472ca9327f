"""Accounts: creating people, signing in, the first-run setup token."""
import hashlib
import hmac
import secrets

from sqlalchemy import func, or_, select, update

from webapp.settings import SiteSettings
from webapp.auth.models import User
from webapp.errors import UserError
from webapp.extensions import db
from webapp.timeutil import utcnow


class AuthError(UserError):
    """A sign-in or profile problem the user can fix."""


def user_count() -> int:
    return db.session.scalar(select(func.count(User.id)))


def find_user(login: str) -> User | None:
    login = login.strip().lower()
    return db.session.scalar(select(User).where(or_(User.username == login, User.email == login)))


def create_user(username: str, email: str, full_name: str, password: str, *, is_admin: bool = False) -> User:
    """Add a person with their personal space; the caller commits."""
    from webapp.spaces.services import create_personal_space

    if db.session.scalar(select(User.id).where(User.username == username)):
        raise AuthError("That username is taken.")
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise AuthError("Another person already uses that email address.")
    user = User(username=username, email=email, full_name=full_name, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    create_personal_space(user)
    return user


def authenticate(login: str, password: str) -> User | None:
    """The active user with these credentials, or None (same answer for unknown and wrong)."""
    user = find_user(login)
    if user is None:
        # Spend the same time as a real check so timing does not tell which usernames exist.
        User(password_hash=_DUMMY_HASH).check_password(password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    user.last_login_at = utcnow()
    return user


def change_password(user: User, current: str, new: str) -> None:
    if not user.check_password(current):
        raise AuthError("The current password is not right.")
    user.set_password(new)


def update_profile(user: User, full_name: str, time_zone: str = "") -> None:
    """Name and time zone; a new email address goes through links.request_email_change (confirmed first)."""
    user.full_name, user.time_zone = full_name, time_zone


def update_person(user: User, username: str, full_name: str, email: str) -> None:
    """An administrator's edit of someone's account: takes effect at once."""
    if db.session.scalar(select(User.id).where(User.username == username, User.id != user.id)):
        raise AuthError("That username is taken.")
    if db.session.scalar(select(User.id).where(User.email == email, User.id != user.id)):
        raise AuthError("Another person already uses that email address.")
    user.username, user.full_name, user.email = username, full_name, email


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_setup_token() -> str | None:
    """A new one-time first-run token while nobody can sign in; None once someone can."""
    if user_count():
        return None
    token = secrets.token_urlsafe(32)
    SiteSettings.get().setup_token_hash = _hash_token(token)
    db.session.commit()
    return token


def setup_token_valid(token: str | None) -> bool:
    stored = SiteSettings.get().setup_token_hash
    if not token or not stored or user_count():
        return False
    return hmac.compare_digest(stored, _hash_token(token))


def create_first_admin(token: str, username: str, email: str, full_name: str, password: str) -> User:
    if not setup_token_valid(token):
        raise AuthError("This setup link is no longer valid.")
    # Spend the token atomically: of two simultaneous submissions only one creates an admin.
    spent = db.session.execute(
        update(SiteSettings)
        .where(SiteSettings.id == 1, SiteSettings.setup_token_hash == _hash_token(token))
        .values(setup_token_hash=None)
    )
    if spent.rowcount != 1:
        raise AuthError("This setup link is no longer valid.")
    return create_user(username, email, full_name, password, is_admin=True)


_DUMMY_HASH = "scrypt:32768:8:1$spacemailtiming$" + "0" * 128
