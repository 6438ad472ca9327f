"""Watching and unwatching pages, a space's blog and whole spaces; signed one-click unwatch links."""
import functools
import hmac
import json

from itsdangerous import BadSignature, URLSafeSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from flask import current_app
from sqlalchemy import delete, func, select

from webapp.extensions import db
from webapp.notify.models import BLOG, PAGE, SPACE, Watch


def target(scope: str, space, page=None) -> dict:
    return {"scope": scope, "space_id": space.id, "page_id": page.id if scope == PAGE else 0}


def is_watching(user, scope: str, space, page=None) -> bool:
    t = target(scope, space, page)
    return db.session.scalar(select(Watch.id).where(Watch.user_id == user.id, *_where(t))) is not None


def watcher_count(scope: str, space, page=None) -> int:
    return db.session.scalar(select(func.count(Watch.id)).where(*_where(target(scope, space, page))))


def set_watching(user, on: bool, scope: str, space, page=None) -> None:
    """Idempotent: asking twice for the same state changes nothing."""
    t = target(scope, space, page)
    if on and not is_watching(user, scope, space, page):
        db.session.add(Watch(user_id=user.id, **t))
    elif not on:
        db.session.execute(delete(Watch).where(Watch.user_id == user.id, *_where(t)))


def _where(t: dict) -> list:
    return [Watch.scope == t["scope"], Watch.space_id == t["space_id"], Watch.page_id == t["page_id"]]


def watches_of(user) -> list[Watch]:
    return list(db.session.scalars(select(Watch).where(Watch.user_id == user.id).order_by(Watch.scope, Watch.id)))


def _signer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="spacemail.unwatch")


@functools.lru_cache(maxsize=4)
def _token_mac(secret_key: str) -> tuple[bytes, "hmac.HMAC"]:
    """(the signer's separator, an HMAC keyed as the signer keys it, to copy for each token)."""
    signer = URLSafeSerializer(secret_key, salt="spacemail.unwatch").make_signer()
    return want_bytes(signer.sep), hmac.new(signer.derive_key(), digestmod=signer.digest_method)


def unwatch_token(watch: Watch) -> str:
    """The token URLSafeSerializer.dumps makes of the watch (read back by it, read_unwatch_token), at a sixth of
    its cost: the serializer tries zlib on every payload (a watch's four values never come out shorter, so the
    payload is the plain one), and its signer derives its key and sets up an HMAC for every token; here the HMAC
    keyed once is copied. A fan-out makes one token per watcher (tests/notify/test_unwatch_tokens.py holds both to
    the same bytes)."""
    if watch.scope in (SPACE, PAGE, BLOG):  # the JSON of four plain values, as json.dumps writes it
        payload = b'[%d,"%s",%d,%d]' % (watch.user_id, watch.scope.encode(), watch.space_id, watch.page_id)
    else:
        payload = json.dumps([watch.user_id, watch.scope, watch.space_id, watch.page_id],
                             separators=(",", ":")).encode()
    payload = base64_encode(payload)
    sep, keyed = _token_mac(current_app.config["SECRET_KEY"])
    mac = keyed.copy()
    mac.update(payload)
    return (payload + sep + base64_encode(mac.digest())).decode("ascii")


def read_unwatch_token(token: str) -> tuple[int, str, int, int] | None:
    try:
        user_id, scope, space_id, page_id = _signer().loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    if scope not in (SPACE, PAGE, BLOG):
        return None
    return int(user_id), scope, int(space_id), int(page_id)


def unwatch_by_token(token: str) -> bool:
    """Stop the watch the token names; True if the token is genuine (watching or not any more)."""
    values = read_unwatch_token(token)
    if values is None:
        return False
    user_id, scope, space_id, page_id = values
    db.session.execute(delete(Watch).where(Watch.user_id == user_id, Watch.scope == scope,
                                           Watch.space_id == space_id, Watch.page_id == page_id))
    return True
