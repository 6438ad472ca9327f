"""Server-side sign-in sessions: a row per sign-in, checked on every request, deleted to sign a browser out."""
import hashlib
import logging
import secrets
from datetime import timedelta

from flask import current_app, g, has_request_context, request
from sqlalchemy import delete, select, update

from webapp.auth.models import User, UserSession
from webapp.extensions import db
from webapp.timeutil import utcnow

TOUCH_EVERY = timedelta(minutes=1)  # last seen is written at most this often, not on every request
log = logging.getLogger(__name__)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _idle_limit(row: UserSession) -> timedelta:
    days = current_app.config["REMEMBERED_SESSION_DAYS" if row.remember else "SESSION_IDLE_DAYS"]
    return timedelta(days=days)


def start(user: User, remember: bool) -> UserSession:
    """A new session for `user`; its key goes into the cookies through `user.get_id()`. The caller commits."""
    key = secrets.token_urlsafe(32)
    row = UserSession(user_id=user.id, key_hash=_hash(key), remember=remember,
                      user_agent=(request.user_agent.string or "")[:300] if has_request_context() else "",
                      address=(request.remote_addr or "")[:64] if has_request_context() else "")
    db.session.add(row)
    db.session.flush()
    user.session_key = key
    g.user_session = row
    return row


def load(cookie_id: str) -> User | None:
    """The user of a live session named by a cookie ("<user id>.<key>"), or None: signed out, expired, disabled."""
    user_id, _, key = (cookie_id or "").partition(".")
    if not user_id.isdigit() or len(key) < 20:
        return None
    found = db.session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                               .where(UserSession.key_hash == _hash(key))).first()  # one query a request
    if found is None:
        return None
    row, user = found
    now = utcnow()
    if row.user_id != int(user_id) or not user.active or row.last_seen_at < now - _idle_limit(row):
        return None  # another's, disabled, or over (the daily sweep deletes the row)
    if row.last_seen_at < now - TOUCH_EVERY:
        g.touch_user_session = row.id  # written after the request, never inside its transaction
    user.session_key = key
    g.user_session = row
    return user


def touch_after_request(_exc=None) -> None:
    """Note "last seen" on its own, once the request's session is gone: loading the user mid-request must not
    commit (or wait on) whatever the request was doing. A failure here only loses a "last seen"."""
    session_id = g.pop("touch_user_session", None)
    if session_id is None:
        return
    db.session.remove()
    try:
        with db.engine.begin() as conn:
            conn.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=utcnow()))
    except Exception:
        log.warning("could not note when session %s was last seen", session_id, exc_info=True)


def current() -> UserSession | None:
    """This request's session row (loading the signed-in user first, which is what finds it)."""
    if not has_request_context():
        return None
    from flask_login import current_user

    if not current_user.is_authenticated:
        return None
    return g.get("user_session")


def sessions_of(user: User) -> list[UserSession]:
    return list(db.session.scalars(select(UserSession).where(UserSession.user_id == user.id)
                                   .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())))


def end(row: UserSession) -> None:
    db.session.delete(row)


def end_all(user: User, keep: UserSession | None = None) -> int:
    """Sign `user` out everywhere (but `keep`, this browser's own session, when given). The caller commits."""
    query = delete(UserSession).where(UserSession.user_id == user.id)
    if keep is not None:
        query = query.where(UserSession.id != keep.id)
    return db.session.execute(query).rowcount


def forget_expired() -> int:
    """Daily housekeeping: sessions idle past their limit go (they would be refused anyway)."""
    now, config = utcnow(), current_app.config
    plain = delete(UserSession).where(UserSession.remember.is_(False),
                                      UserSession.last_seen_at < now - timedelta(days=config["SESSION_IDLE_DAYS"]))
    remembered = delete(UserSession).where(
        UserSession.remember.is_(True), UserSession.last_seen_at < now - timedelta(days=config["REMEMBERED_SESSION_DAYS"]))
    return db.session.execute(plain).rowcount + db.session.execute(remembered).rowcount
