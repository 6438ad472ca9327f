"""SMTP servers: create, edit, remove, the default and the failover order, and the one from configuration."""
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import func, select, update

from webapp.errors import UserError
from webapp.extensions import db
from webapp.mailnet import (
    OAUTH, PASSWORD, Endpoint, auth_kind, fresh_secret, needs_secret_again, secret_again_message,
)
from webapp.oauth.credentials import SignInChoiceError, resolve
from webapp.outgoing.models import DEFAULT_PORTS, NONE, QUEUED, STARTTLS, TLS, OutboundMail, SmtpServer, SmtpTest
from webapp.outgoing.queue import flush
from webapp.outgoing.smtp import SmtpProfile
from webapp.security import secret_box

CONFIG_KEY = "config"
_SCHEMES = {"smtp": NONE, "smtp+starttls": STARTTLS, "smtps": TLS}


class OutgoingError(UserError):
    """An outgoing-mail setting the admin can fix."""


@dataclass
class ServerData:
    name: str
    from_address: str
    from_name: str
    subject_prefix: str
    host: str
    port: int
    security: str
    username: str
    password: str  # "" on edit keeps the saved one, unless the username is cleared
    timeout_seconds: int
    reply_to_policy: str
    trusted_ca_pem: str
    auth_method: str = PASSWORD
    oauth_ticket: str = ""
    max_per_minute: int = 0
    max_connections: int = 0

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.of("smtp", self.host, self.port, self.username, self.security, self.trusted_ca_pem,
                           self.auth_method)

    @property
    def signs_in_with_provider(self) -> bool:
        return auth_kind(self.auth_method) != PASSWORD

    @property
    def secret_missing(self) -> str:
        """What to do when a username has no secret: type the password, or Connect."""
        if self.signs_in_with_provider:
            return secret_again_message(None, self.endpoint, False)
        return "Enter the password for this username, or clear the username to send without signing in."


def servers() -> list[SmtpServer]:
    return list(db.session.scalars(select(SmtpServer).order_by(SmtpServer.position, SmtpServer.id)))


def configured_profile() -> SmtpProfile | None:
    """The server from SPACEMAIL_SMTP_URL, or None when it is not set. Raises OutgoingError when unreadable."""
    config = current_app.config
    url = config.get("SMTP_URL")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise OutgoingError("SPACEMAIL_SMTP_URL must look like smtp+starttls://user:password@host:587 "
                            "(schemes: smtp, smtp+starttls, smtps).")
    if not config.get("SMTP_FROM"):
        raise OutgoingError("SPACEMAIL_SMTP_URL is set but SPACEMAIL_SMTP_FROM (the From address) is not.")
    try:
        port = parts.port or DEFAULT_PORTS[_SCHEMES[parts.scheme]]
    except ValueError:
        raise OutgoingError("The port in SPACEMAIL_SMTP_URL is not a number from 1 to 65535.") from None
    return SmtpProfile(
        key=CONFIG_KEY, name="From configuration", host=parts.hostname, port=port, security=_SCHEMES[parts.scheme],
        from_address=config["SMTP_FROM"], from_name=config.get("SMTP_FROM_NAME") or "${fullname} (Spacemail)",
        subject_prefix=config.get("SMTP_SUBJECT_PREFIX") or "",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=float(config.get("SMTP_TIMEOUT") or 30), trusted_ca_pem=config.get("SMTP_CA_PEM") or None,
        from_configuration=True, max_per_minute=int(config.get("SMTP_MAX_PER_MINUTE") or 0),
        max_connections=int(config.get("SMTP_MAX_CONNECTIONS") or 0),
    )


def configuration_problem() -> str | None:
    try:
        configured_profile()
    except OutgoingError as exc:
        return str(exc)
    return None


def _safe_configured() -> SmtpProfile | None:
    try:
        return configured_profile()
    except OutgoingError:
        return None


def profile(server: SmtpServer) -> SmtpProfile:
    password = None
    if server.username and server.password_encrypted:
        password = secret_box().decrypt(server.password_encrypted)
    oauth = auth_kind(server.auth_method) != PASSWORD
    return SmtpProfile(
        key=server.key, name=server.name, host=server.host, port=server.port, security=server.security,
        from_address=server.from_address, from_name=server.from_name, subject_prefix=server.subject_prefix,
        username=server.username or None, password=None if oauth else password,
        timeout=float(server.timeout_seconds), reply_to_policy=server.reply_to_policy,
        trusted_ca_pem=server.trusted_ca_pem, auth=OAUTH if oauth else PASSWORD,
        oauth_grant_id=server.oauth_grant_id if oauth else None,
        max_per_minute=server.max_per_minute or 0, max_connections=server.max_connections or 0,
    )


def default_key(rows: list[SmtpServer] | None = None) -> str | None:
    """A server marked default; else the configured one; else the first in the list."""
    rows = servers() if rows is None else rows
    marked = next((s for s in rows if s.is_default), None)
    if marked is not None:
        return marked.key
    if _safe_configured() is not None:
        return CONFIG_KEY
    return rows[0].key if rows else None


def ordered_profiles() -> list[SmtpProfile]:
    """The default first, then the others in the listed order: the failover order."""
    rows = servers()
    configured = _safe_configured()
    listed = ([configured] if configured else []) + [profile(s) for s in rows]
    first = default_key(rows)
    return sorted(listed, key=lambda p: p.key != first)


def profile_for(key: str) -> SmtpProfile | None:
    if key == CONFIG_KEY:
        return _safe_configured()
    server = db.session.get(SmtpServer, int(key)) if key.isdigit() else None
    return profile(server) if server else None


def _grant(data: ServerData, user, stored_grant_id: int | None = None) -> int | None:
    """The grant a server signing in with a provider uses (webapp/oauth): checked like a mailbox's."""
    if not data.signs_in_with_provider:
        return None
    if not data.username:
        raise OutgoingError("Enter the username: the mailbox address the provider's sign-in is for.")
    try:
        return resolve(data, user, data.host, data.security in (STARTTLS, TLS), stored_grant_id)
    except SignInChoiceError as exc:
        raise OutgoingError(str(exc)) from None


def create_server(data: ServerData, user=None) -> SmtpServer:
    if data.username and not fresh_secret(data.auth_method, data.password, data.oauth_ticket):
        raise OutgoingError(data.secret_missing)
    grant_id = _grant(data, user)
    position = (db.session.scalar(select(func.max(SmtpServer.position))) or 0) + 1
    server = SmtpServer(position=position)
    _apply(server, data, grant_id)
    db.session.add(server)
    db.session.flush()
    return server


def update_server(server: SmtpServer, data: ServerData, user=None) -> None:
    """A username's password is typed again for any change of where it goes or how it is protected (mailnet);
    a provider's sign-in likewise is made again."""
    stored, has_secret = server.endpoint, bool(server.username and server.has_stored_secret)
    fresh = fresh_secret(data.auth_method, data.password, data.oauth_ticket)
    if data.username and not fresh and needs_secret_again(stored, data.endpoint, has_secret):
        raise OutgoingError(secret_again_message(stored, data.endpoint, has_secret) if has_secret
                            else data.secret_missing)
    grant_id = _grant(data, user, server.oauth_grant_id)
    _apply(server, data, grant_id)
    if grant_id is not None:
        flush()  # mail that waited for this server's sign-in goes out now


def _apply(server: SmtpServer, data: ServerData, grant_id: int | None = None) -> None:
    server.name, server.from_address = data.name or "SMTP Server", data.from_address
    server.from_name, server.subject_prefix = data.from_name, data.subject_prefix
    server.host, server.port, server.security = data.host.lower(), data.port, data.security
    server.timeout_seconds, server.reply_to_policy = data.timeout_seconds, data.reply_to_policy
    server.max_per_minute, server.max_connections = data.max_per_minute, data.max_connections
    server.trusted_ca_pem = data.trusted_ca_pem or None
    server.username = data.username or None
    if not data.username:
        server.password_encrypted = None  # clearing the username really turns authentication off
        server.auth_method, server.oauth_grant_id = PASSWORD, None
    else:
        server.apply_sign_in(data.auth_method, data.password, grant_id)


def remove_server(server: SmtpServer) -> None:
    """Mail pinned to it goes through the default instead; its test results go with it."""
    db.session.execute(update(OutboundMail).where(OutboundMail.server_key == server.key,
                                                  OutboundMail.state == QUEUED).values(server_key=None))
    db.session.execute(SmtpTest.__table__.delete().where(SmtpTest.server_key == server.key))
    db.session.delete(server)


def set_default(key: str) -> None:
    db.session.execute(update(SmtpServer).values(is_default=False))
    if key != CONFIG_KEY:
        db.session.get(SmtpServer, int(key)).is_default = True


def last_tests(keys: list[str]) -> dict[str, SmtpTest]:
    """The newest finished test of each server, in one query."""
    if not keys:
        return {}
    newest = (select(func.max(SmtpTest.id)).where(SmtpTest.server_key.in_(keys), SmtpTest.result.is_not(None))
              .group_by(SmtpTest.server_key))
    return {t.server_key: t for t in db.session.scalars(select(SmtpTest).where(SmtpTest.id.in_(newest)))}
