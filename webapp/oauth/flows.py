""""Connect": the authorization code flow with PKCE, its state bound to the person's session, the code exchanged
once, and the grant handed back to the form it started from (the form's values kept, never a password)."""
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update

from webapp.errors import UserError
from webapp.extensions import db
from webapp.oauth.http import ProviderError
from webapp.oauth.models import DELEGATED, GOOGLE, MICROSOFT, OAuthFlow, OAuthGrant, OAuthProvider
from webapp.oauth.providers import redirect_uri
from webapp.oauth.tokens import address_in, store_answer, token_request
from webapp.security import secret_box
from webapp.timeutil import utcnow

FLOW_MINUTES = 15


class SignInError(UserError):
    """A sign-in with a provider that did not complete; the text says why, never with a code or token in it."""


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _challenge(verifier: str) -> str:
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    return create_s256_code_challenge(verifier)


def start(provider: OAuthProvider, user, session_id: int | None, return_to: str, draft: dict) -> str:
    """A new flow; the URL of the provider's sign-in page for it."""
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    db.session.add(OAuthFlow(state_hash=_hash(state), ticket=secrets.token_urlsafe(24), provider_id=provider.id,
                             user_id=user.id, session_id=session_id, return_to=return_to[:500],
                             verifier_encrypted=secret_box().encrypt(verifier), draft=draft))
    params = {"response_type": "code", "client_id": provider.client_id, "redirect_uri": redirect_uri(),
              "scope": provider.scopes, "state": state, "code_challenge": _challenge(verifier),
              "code_challenge_method": "S256"}
    if provider.kind == GOOGLE:
        params.update(access_type="offline", prompt="consent")  # a refresh token every time, not only the first
    elif provider.kind == MICROSOFT:
        params.update(prompt="select_account")
    hint = str(draft.get("username") or "")
    if "@" in hint and len(hint) < 255:
        params["login_hint"] = hint
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    return provider.authorization_endpoint + separator + urlencode(params)


def finish(args, user, session_id: int | None) -> OAuthFlow:
    """The provider sent the person back: check the state, exchange the code once, keep the grant."""
    state = args.get("state", "")
    flow = db.session.scalar(select(OAuthFlow).where(OAuthFlow.state_hash == _hash(state))) if state else None
    if flow is None or flow.user_id != user.id or flow.session_id != session_id:
        raise SignInError("This sign-in was not started here, or from another session: start it again with Connect.")
    used = db.session.execute(update(OAuthFlow).where(OAuthFlow.id == flow.id, OAuthFlow.finished_at.is_(None))
                              .values(finished_at=utcnow())).rowcount  # once, even with two callbacks at a time
    if not used:
        raise SignInError("This sign-in was already used: start it again with Connect.")
    db.session.refresh(flow)
    verifier = secret_box().decrypt(flow.verifier_encrypted) if flow.verifier_encrypted else ""
    flow.verifier_encrypted = None
    db.session.commit()  # used, durably, before the provider is asked: no write lock held across that call
    if flow.created_at < utcnow() - timedelta(minutes=FLOW_MINUTES):
        return _failed(flow, "The sign-in took too long: start it again with Connect.")
    if args.get("error"):
        error, detail = (_printable(args.get(name, ""), limit) for name, limit in (("error", 60),
                                                                               ("error_description", 200)))
        return _failed(flow, f"{flow.provider.name} did not grant access ({error})" + (f": {detail}" if detail else "")
                       + ".")
    code = args.get("code", "")
    if not code or len(code) > 4096:
        return _failed(flow, f"{flow.provider.name} sent no authorization code back.")
    try:
        answer = token_request(flow.provider, {"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": redirect_uri(), "code_verifier": verifier})
    except ProviderError as exc:
        return _failed(flow, f"The sign-in could not be completed: {exc.message}")
    if not answer.get("refresh_token"):
        return _failed(flow, f"{flow.provider.name} gave no refresh token, so the mailbox would stop working within "
                             "the hour. Check that offline access is among the provider's scopes.")
    grant = OAuthGrant(provider_id=flow.provider_id, kind=DELEGATED, address=address_in(answer),
                       created_by_id=user.id)
    store_answer(grant, answer)
    db.session.add(grant)
    db.session.flush()
    flow.grant_id = grant.id
    return flow


def _printable(text, limit: int) -> str:
    return "".join(c for c in str(text) if c.isprintable())[:limit].rstrip(".")


def _failed(flow: OAuthFlow, message: str) -> OAuthFlow:
    flow.error = message
    return flow


def flow_for_ticket(ticket: str, user) -> OAuthFlow | None:
    """A finished flow of this person's, by the ticket its form carries; None for anyone else's."""
    if not ticket or len(ticket) > 64:
        return None
    flow = db.session.scalar(select(OAuthFlow).where(OAuthFlow.ticket == ticket))
    if flow is None or flow.user_id != user.id or flow.finished_at is None:
        return None
    return flow
