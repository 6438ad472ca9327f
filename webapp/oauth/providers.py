"""Sign-in providers: the Google and Microsoft 365 presets (endpoints and scopes from the providers' own
documentation), another provider by discovery or by its endpoints, the client secret, and the redirect URI."""
import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select

from webapp.errors import UserError
from webapp.extensions import db
from webapp.oauth.http import ProviderError, call, check_url
from webapp.oauth.models import GOOGLE, MICROSOFT, OAuthProvider
from webapp.security import secret_box

# Google: https://developers.google.com/identity/protocols/oauth2/web-server and
# https://developers.google.com/gmail/imap/xoauth2-protocol (scope https://mail.google.com/ for IMAP, POP, SMTP).
GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPES = "openid email https://mail.google.com/"
GOOGLE_HOSTS = "imap.gmail.com\npop.gmail.com\nsmtp.gmail.com"
# Microsoft identity platform v2.0 and "Authenticate an IMAP, POP or SMTP connection using OAuth"
# (learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth).
MICROSOFT_BASE = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
MICROSOFT_SCOPES = ("openid email offline_access https://outlook.office.com/IMAP.AccessAsUser.All "
                    "https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/SMTP.Send")
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_HOSTS = "outlook.office365.com\nsmtp.office365.com"
TENANT_RE = re.compile(r"^(organizations|common|consumers|[0-9a-fA-F-]{36}|[A-Za-z0-9.-]{1,100}\.[A-Za-z]{2,})$")


class ProviderSetupError(UserError):
    """A provider's settings that cannot work; the text says which and why."""


@dataclass
class ProviderData:
    name: str
    kind: str
    client_id: str
    client_secret: str = ""  # "" on edit keeps the stored one
    tenant: str = ""
    discovery_url: str = ""
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    scopes: str = ""
    app_scope: str = ""
    mail_hosts: str = ""
    app_mailboxes: str = ""


def providers() -> list[OAuthProvider]:
    return list(db.session.scalars(select(OAuthProvider).order_by(OAuthProvider.name)))


def redirect_uri() -> str:
    """The one address every provider sends people back to: registered in the provider's console."""
    return current_app.config["BASE_URL"] + "/oauth/callback"


def env_name(provider_name: str) -> str:
    return "SPACEMAIL_OAUTH_SECRET_" + re.sub(r"[^A-Z0-9]+", "_", provider_name.upper()).strip("_")


def configured_secret(provider_name: str) -> str | None:
    return current_app.config["OAUTH_CLIENT_SECRETS"].get(env_name(provider_name))


def client_secret(provider: OAuthProvider) -> str:
    """From configuration when set there (SPACEMAIL_OAUTH_SECRET_<NAME>), else the stored one; "" for none."""
    configured = configured_secret(provider.name)
    if configured is not None:
        return configured
    return secret_box().decrypt(provider.client_secret_encrypted) if provider.client_secret_encrypted else ""


def hosts_of(provider: OAuthProvider) -> set[str]:
    return {line.strip().lower().rstrip(".") for line in (provider.mail_hosts or "").splitlines() if line.strip()}


def app_mailboxes_of(provider: OAuthProvider) -> set[str]:
    return {line.strip().lower() for line in (provider.app_mailboxes or "").splitlines() if line.strip()}


def _preset(data: ProviderData) -> ProviderData:
    """The endpoints and scopes the provider documents, for the two presets; another provider's as given."""
    if data.kind == GOOGLE:
        data.authorization_endpoint, data.token_endpoint = GOOGLE_AUTHORIZE, GOOGLE_TOKEN
        data.scopes, data.app_scope = data.scopes or GOOGLE_SCOPES, ""
        data.mail_hosts = data.mail_hosts or GOOGLE_HOSTS
    elif data.kind == MICROSOFT:
        tenant = data.tenant or "organizations"
        if not TENANT_RE.match(tenant):
            raise ProviderSetupError("The tenant is a directory (tenant) id, a verified domain, organizations or "
                                     "common.")
        data.tenant = tenant
        data.authorization_endpoint = MICROSOFT_BASE.format(tenant=tenant) + "/authorize"
        data.token_endpoint = MICROSOFT_BASE.format(tenant=tenant) + "/token"
        data.scopes = data.scopes or MICROSOFT_SCOPES
        data.mail_hosts = data.mail_hosts or MICROSOFT_HOSTS
        if data.app_mailboxes and not data.app_scope:
            data.app_scope = MICROSOFT_APP_SCOPE
    elif data.discovery_url and not (data.authorization_endpoint and data.token_endpoint):
        found = discover(data.discovery_url)
        data.authorization_endpoint = data.authorization_endpoint or found.get("authorization_endpoint", "")
        data.token_endpoint = data.token_endpoint or found.get("token_endpoint", "")
    return data


def discover(url: str) -> dict:
    """The provider's OpenID Connect / OAuth 2.0 metadata (RFC 8414): its authorization and token endpoints."""
    try:
        found = call(url, what="The discovery URL")
    except ProviderError as exc:
        raise ProviderSetupError(exc.message) from None
    if not all(isinstance(found.get(k), str) for k in ("authorization_endpoint", "token_endpoint")):
        raise ProviderSetupError("The discovery document names no authorization and token endpoints.")
    return found


def _check(data: ProviderData, provider: OAuthProvider | None) -> None:
    taken = select(OAuthProvider.id).where(func.lower(OAuthProvider.name) == data.name.lower())
    if provider is not None:
        taken = taken.where(OAuthProvider.id != provider.id)
    if db.session.scalar(taken) is not None:
        raise ProviderSetupError("There is already a sign-in provider with that name.")
    if not data.authorization_endpoint or not data.token_endpoint:
        raise ProviderSetupError("Give the discovery URL, or both the authorization and the token endpoint.")
    for label, url in (("authorization endpoint", data.authorization_endpoint), ("token endpoint", data.token_endpoint)):
        try:
            check_url(url, f"The {label}")
        except ProviderError as exc:
            raise ProviderSetupError(exc.message) from None
    if not data.scopes.strip():
        raise ProviderSetupError("Give the scopes to ask for (space-separated).")
    if data.app_mailboxes.strip() and not (data.app_scope.strip() and data.mail_hosts.strip()):
        raise ProviderSetupError("App-only access needs its scope and the mail servers' host names.")


def save_provider(data: ProviderData, provider: OAuthProvider | None = None) -> OAuthProvider:
    data = _preset(data)
    _check(data, provider)
    if provider is None:
        provider = OAuthProvider()
        db.session.add(provider)
    for name in ("name", "kind", "client_id", "tenant", "discovery_url", "authorization_endpoint", "token_endpoint",
                 "scopes", "app_scope", "mail_hosts", "app_mailboxes"):
        setattr(provider, name, " ".join(getattr(data, name).split()) if name == "scopes"
                else getattr(data, name).strip())
    if data.client_secret:
        provider.client_secret_encrypted = secret_box().encrypt(data.client_secret)
    db.session.flush()
    return provider


def remove_provider(provider: OAuthProvider) -> None:
    """Only a provider nothing signs in with may go (its grants would leave mailboxes without a way in)."""
    if in_use(provider):
        raise ProviderSetupError(f"{provider.name} is still used to sign in: switch those mail accounts and servers "
                                 "to another authentication first.")
    db.session.delete(provider)


def in_use(provider: OAuthProvider) -> int:
    """How many mailboxes and SMTP servers sign in with this provider."""
    total = 0
    for table in connection_tables():
        total += db.session.scalar(select(func.count()).select_from(table).where(
            table.c.auth_method.in_([f"oauth:{provider.id}", f"app:{provider.id}"]))) or 0
    return total


def connection_tables():
    """Every table of stored connections (mail accounts, reply mailbox, SMTP servers): those that sign in."""
    return [t for t in db.metadata.tables.values() if "oauth_grant_id" in t.c and "auth_method" in t.c]


def grants_in_use():
    """The ids of grants some connection signs in with."""
    return [select(t.c.oauth_grant_id).where(t.c.oauth_grant_id.is_not(None)) for t in connection_tables()]
