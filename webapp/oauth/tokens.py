"""Access tokens that keep working: refreshed by workers before they expire, one worker per grant at a time (a
lease), a rotated refresh token stored in the transaction that records the refresh, and a refused refresh turned
into "Reconnect needed" once, with a signal so the people who can fix it are told."""
import base64
import json
import logging
import time
import uuid
from datetime import timedelta

from flask import current_app, has_request_context
from sqlalchemy import or_, select, update

from webapp.extensions import db
from webapp.mailnet import MailboxError
from webapp.oauth.http import ProviderError, call
from webapp.oauth.models import APP_ONLY, GRANT_OK, GRANT_RECONNECT, OAuthFlow, OAuthGrant, OAuthProvider
from webapp.oauth.providers import client_secret, grants_in_use
from webapp.security import secret_box
from webapp.signals import grant_needs_reconnect
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)
LEASE_SECONDS = 60


def token_request(provider: OAuthProvider, form: dict) -> dict:
    """POST to the token endpoint with the client's credentials (client_secret_post); the checked answer."""
    form = {**form, "client_id": provider.client_id}
    secret = client_secret(provider)
    if secret:
        form["client_secret"] = secret
    answer = call(provider.token_endpoint, form, what=provider.name)
    if not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
        raise ProviderError("garbage", f"{provider.name} answered without an access token.")
    if str(answer.get("token_type", "bearer")).lower() != "bearer":
        raise ProviderError("garbage", f"{provider.name} gave a token that is not a bearer token.")
    return answer


def expiry_of(answer: dict):
    try:
        seconds = max(int(answer.get("expires_in", 3600)), 1)
    except (TypeError, ValueError):
        seconds = 3600
    return utcnow() + timedelta(seconds=seconds)


def address_in(answer: dict) -> str:
    """The mailbox address the person signed in as, from the ID token the token endpoint gave (over verified TLS
    straight from the provider, so OpenID Connect §3.1.3.7 lets its signature go unchecked here)."""
    token = answer.get("id_token")
    if not isinstance(token, str) or token.count(".") != 2:
        return ""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return ""
    for claim in ("email", "preferred_username", "upn"):
        value = claims.get(claim) if isinstance(claims, dict) else None
        if isinstance(value, str) and "@" in value and len(value) <= 254 and value.isprintable():
            return value.strip()
    return ""


def store_answer(grant: OAuthGrant, answer: dict) -> None:
    grant.access_token_encrypted = secret_box().encrypt(answer["access_token"])
    grant.access_expires_at = expiry_of(answer)
    if isinstance(answer.get("refresh_token"), str) and answer["refresh_token"]:
        grant.refresh_token_encrypted = secret_box().encrypt(answer["refresh_token"])  # rotated: keep the newest
    if isinstance(answer.get("scope"), str):
        grant.scope = answer["scope"][:1000]
    grant.status, grant.problem, grant.problem_at, grant.refreshed_at = GRANT_OK, None, None, utcnow()


def _fresh(grant: OAuthGrant, ahead: float) -> bool:
    return (grant.access_token_encrypted is not None and grant.access_expires_at is not None
            and grant.access_expires_at > utcnow() + timedelta(seconds=ahead))


def reconnect_error(grant: OAuthGrant) -> MailboxError:
    name = grant.provider.name if grant.provider else "the provider"
    return MailboxError("reconnect_needed", f"Reconnect needed: the sign-in with {name} no longer works "
                        f"({grant.problem or 'the provider refused it'}). Open the settings and Connect again.")


def access_token(grant_id: int | None) -> str:
    """A current access token for the grant, refreshed first when it expires soon (workers only)."""
    grant = db.session.get(OAuthGrant, grant_id) if grant_id else None
    if grant is None:
        raise MailboxError("not_connected", "This connection has not been connected with its provider yet: open its "
                                            "settings and Connect.")
    if grant.needs_reconnect:
        raise reconnect_error(grant)
    if _fresh(grant, current_app.config["OAUTH_REFRESH_AHEAD_SECONDS"]):
        return secret_box().decrypt(grant.access_token_encrypted)
    if has_request_context():  # never refresh inside a web request: a worker does it
        if _fresh(grant, 5):
            return secret_box().decrypt(grant.access_token_encrypted)
        raise MailboxError("token_renewing", "The access token is being renewed by a worker; try again in a minute.")
    return refresh(grant)


def _take_lease(grant_id: int, owner: str) -> bool:
    now = utcnow()
    taken = db.session.execute(update(OAuthGrant).where(
        OAuthGrant.id == grant_id, or_(OAuthGrant.lease_until.is_(None), OAuthGrant.lease_until < now))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))).rowcount
    db.session.commit()
    return taken == 1


def _release(grant_id: int, owner: str) -> None:
    db.session.execute(update(OAuthGrant).where(OAuthGrant.id == grant_id, OAuthGrant.lease_owner == owner)
                       .values(lease_owner=None, lease_until=None))


def refresh(grant: OAuthGrant, *, force: bool = False) -> str:
    """Refresh under the grant's lease; a worker that finds another refreshing waits and takes its token."""
    ahead = current_app.config["OAUTH_REFRESH_AHEAD_SECONDS"]
    owner, deadline = uuid.uuid4().hex, time.monotonic() + current_app.config["OAUTH_TIMEOUT_SECONDS"] + 5
    while not _take_lease(grant.id, owner):
        if time.monotonic() > deadline:
            raise MailboxError("provider_slow", "Another worker is renewing this sign-in and has not finished; the "
                                                "next attempt will use its token.")
        time.sleep(0.2)
        db.session.refresh(grant)
        if grant.needs_reconnect:
            raise reconnect_error(grant)
        if _fresh(grant, ahead) and not force:
            return secret_box().decrypt(grant.access_token_encrypted)
    try:
        db.session.refresh(grant)  # what the last lease holder stored
        if grant.needs_reconnect:
            raise reconnect_error(grant)
        if _fresh(grant, ahead) and not force:  # the last holder refreshed it: ours to give back at once
            token = secret_box().decrypt(grant.access_token_encrypted)
            _release(grant.id, owner)
            db.session.commit()
            return token
        answer = token_request(grant.provider, _refresh_form(grant))
    except ProviderError as exc:
        db.session.rollback()
        _failed(grant, exc)
        _release(grant.id, owner)
        db.session.commit()
        if grant.needs_reconnect:
            grant_needs_reconnect.send(grant)
            raise reconnect_error(grant) from None
        raise MailboxError("provider_unavailable", f"The access token could not be renewed: {exc.message}") from None
    except BaseException:
        db.session.rollback()
        _release(grant.id, owner)
        db.session.commit()
        raise
    store_answer(grant, answer)
    _release(grant.id, owner)
    db.session.commit()  # the new tokens, the rotated refresh token and the lease's end in one transaction
    return answer["access_token"]


def _refresh_form(grant: OAuthGrant) -> dict:
    if grant.kind == APP_ONLY:
        return {"grant_type": "client_credentials", "scope": grant.provider.app_scope}
    if not grant.refresh_token_encrypted:
        raise ProviderError("refused", "the provider gave no refresh token (offline access was not granted)",
                            error="no_refresh_token")
    return {"grant_type": "refresh_token", "refresh_token": secret_box().decrypt(grant.refresh_token_encrypted)}


def _failed(grant: OAuthGrant, exc: ProviderError) -> None:
    """A refused refresh (revoked, expired, consent withdrawn) needs a person; anything else is tried again."""
    grant.problem, grant.problem_at = exc.message[:500], utcnow()
    if exc.refused:
        grant.status = GRANT_RECONNECT
        grant.access_token_encrypted, grant.access_expires_at = None, None


def refresh_due() -> int:
    """Every minute from workers/cron.py: refresh grants in use whose access token expires soon."""
    ahead = timedelta(seconds=current_app.config["OAUTH_REFRESH_AHEAD_SECONDS"] * 2)
    in_use = grants_in_use()
    if not in_use:
        return 0
    due = list(db.session.scalars(select(OAuthGrant.id).where(
        OAuthGrant.status == GRANT_OK, or_(*[OAuthGrant.id.in_(q) for q in in_use]),
        or_(OAuthGrant.access_expires_at.is_(None), OAuthGrant.access_expires_at < utcnow() + ahead))))
    done = 0
    for grant_id in due:
        grant = db.session.get(OAuthGrant, grant_id)
        try:
            refresh(grant)
            done += 1
        except MailboxError as exc:
            log.info("grant %s not refreshed: %s", grant_id, exc.kind)
    return done


def forget_unused(days: int = 1) -> int:
    """Grants no connection took (a Connect whose form was never saved) go after a day, with their flows."""
    old = utcnow() - timedelta(days=days)
    for flow in db.session.scalars(select(OAuthFlow).where(OAuthFlow.created_at < old)):
        db.session.delete(flow)
    in_use = grants_in_use()
    query = select(OAuthGrant).where(OAuthGrant.created_at < old)
    for q in in_use:
        query = query.where(OAuthGrant.id.not_in(q))
    count = 0
    for grant in db.session.scalars(query):
        db.session.delete(grant)
        count += 1
    db.session.commit()
    return count
