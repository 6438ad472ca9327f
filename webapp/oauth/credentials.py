"""What a stored connection signs in with: its password, or a current access token from its grant; and the checks
a form's choice of "Sign in with <provider>" passes before it is saved (the provider, its hosts, TLS, the grant)."""
from sqlalchemy import select

from webapp.errors import UserError
from webapp.extensions import db
from webapp.mailnet import (
    APP, OAUTH, PASSWORD, PLAIN, MailboxSettings, auth_kind, auth_provider_id, mailbox_security, settings_for,
)
from webapp.oauth.flows import flow_for_ticket
from webapp.oauth.models import APP_ONLY, OAuthGrant, OAuthProvider
from webapp.oauth.providers import app_mailboxes_of, connection_tables, hosts_of, providers
from webapp.oauth.tokens import access_token
from webapp.security import secret_box


class SignInChoiceError(UserError):
    """The authentication chosen on a form cannot be used as it stands; the text says what to do."""


def secret_for(connection) -> str:
    """The password, decrypted, or a current access token (refreshed first if it expires soon: workers only)."""
    if auth_kind(connection.auth_method) == PASSWORD:
        return secret_box().decrypt(connection.password_encrypted) if connection.password_encrypted else ""
    return access_token(connection.oauth_grant_id)


def grant_of(connection) -> OAuthGrant | None:
    """The grant a stored connection signs in with, for its form's status line (None for a password)."""
    if auth_kind(connection.auth_method) == PASSWORD or connection.oauth_grant_id is None:
        return None
    return db.session.get(OAuthGrant, connection.oauth_grant_id)


def mailbox_settings(connection, timeout: float | None = None) -> MailboxSettings:
    return settings_for(connection, secret_for(connection), timeout)


def choices() -> list[tuple[str, str]]:
    """The Authentication choices a form offers: a password, and each provider (and its app-only access)."""
    options = [(PASSWORD, "Password")]
    for provider in providers():
        options.append((f"{OAUTH}:{provider.id}", f"Sign in with {provider.name}"))
        if provider.app_scope and provider.app_mailboxes.strip():
            options.append((f"{APP}:{provider.id}", f"{provider.name}: app-only access (no one signs in)"))
    return options


def provider_of(auth_method: str) -> OAuthProvider | None:
    provider_id = auth_provider_id(auth_method)
    return db.session.get(OAuthProvider, provider_id) if provider_id else None


def resolve_mailbox(data, user, stored_grant_id: int | None = None) -> int | None:
    """resolve() for a mailbox's form values (a mail account, the reply mailbox): encrypted unless plain POP/IMAP."""
    encrypted = mailbox_security(data.protocol, data.require_starttls) != PLAIN
    return resolve(data, user, data.host, encrypted, stored_grant_id)


def resolve(data, user, host: str, encrypted: bool, stored_grant_id: int | None = None) -> int | None:
    """The grant a form's values sign in with: a sign-in just finished in this form, a new app-only grant, or
    None to keep the stored one. Refuses what cannot be used (another person's sign-in, a host the provider's
    tokens must not go to, no TLS)."""
    kind = auth_kind(data.auth_method)
    if kind == PASSWORD:
        return None
    provider = provider_of(data.auth_method)
    if provider is None:
        raise SignInChoiceError("Choose a sign-in provider that exists (Administration › Sign-in providers).")
    if not encrypted:
        raise SignInChoiceError("Signing in with a provider needs an encrypted connection: a token never goes in "
                                "plain text. Choose IMAPS or POPS, require STARTTLS, or choose STARTTLS or SSL/TLS.")
    hosts = hosts_of(provider)
    if hosts and host.strip().lower().rstrip(".") not in hosts:
        raise SignInChoiceError(f"{provider.name}'s tokens may only go to its mail servers: "
                                f"{', '.join(sorted(hosts))}. Change the host, or the provider's mail servers.")
    if kind == APP:
        if (data.username or "").strip().lower() not in app_mailboxes_of(provider):
            raise SignInChoiceError(f"App-only access through {provider.name} may open only the mailboxes its "
                                    "system administrator listed; this username is not one of them.")
        stored = db.session.get(OAuthGrant, stored_grant_id) if stored_grant_id else None
        if stored is not None and stored.kind == APP_ONLY and stored.provider_id == provider.id:
            return None
        grant = OAuthGrant(provider_id=provider.id, kind=APP_ONLY, address="", created_by_id=user.id)
        db.session.add(grant)
        db.session.flush()
        return grant.id
    if not data.oauth_ticket:
        return None  # the stored grant, if the one rule (mailnet) lets it be kept
    flow = flow_for_ticket(data.oauth_ticket, user)
    if flow is None or flow.grant_id is None or flow.provider_id != provider.id:
        raise SignInChoiceError(f"Connect with {provider.name} first (or again): the sign-in this form names is "
                                "not yours or did not finish.")
    taken = [db.session.scalar(select(t.c.id).where(t.c.oauth_grant_id == flow.grant_id).limit(1))
             for t in connection_tables()]
    if any(taken) and flow.grant_id != stored_grant_id:
        raise SignInChoiceError("That sign-in is already used by another connection: Connect again for this one.")
    return flow.grant_id

