"""Feed tokens: what a feed reader sends instead of a session. An HMAC of the person's id and nonce under the
secret key, so nothing secret is stored; resetting the nonce ends every feed link handed out before."""
import hashlib
import hmac
import secrets

from flask import current_app

from webapp.auth.models import User
from webapp.extensions import db


def _mac(user: User) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"feed:{user.id}:{user.feed_nonce}".encode(), hashlib.sha256).hexdigest()[:40]


def feed_token(user: User) -> str:
    return f"{user.id}.{_mac(user)}"


def user_for(token: str | None) -> User | None:
    """The active person this token is theirs, or None."""
    user_id, _, mac = (token or "").partition(".")
    if not user_id.isdigit() or len(mac) != 40 or len(user_id) > 12:
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or not hmac.compare_digest(_mac(user), mac):
        return None
    return user


def reset(user: User) -> None:
    user.feed_nonce = secrets.token_hex(16)
