"""One model of a connection to a mail server, shared by POP3, IMAP and SMTP: the fields that decide where a
secret goes, the rule for when the secret must be typed again, the host policy, verified TLS, the certificate peek."""
import ipaddress
import socket
import ssl
from dataclasses import dataclass, fields

from cryptography import x509
from flask import current_app
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from webapp.errors import UserError
from webapp.extensions import db
from webapp.security import secret_box

_FORBIDDEN = ("\r", "\n", "\x00")
IMPLICIT_TLS, STARTTLS, PLAIN = "tls", "starttls", "none"
# How a connection signs in: "password", "oauth:<provider id>" (a person signed in with the provider) or
# "app:<provider id>" (the provider's app-only access, client credentials). What the session sends is then a
# password or a bearer token (SASL XOAUTH2 or OAUTHBEARER, RFC 7628).
PASSWORD, OAUTH, APP = "password", "oauth", "app"
XOAUTH2, OAUTHBEARER = "XOAUTH2", "OAUTHBEARER"


def auth_kind(auth_method: str | None) -> str:
    """password, oauth or app, from a stored or typed authentication choice."""
    kind = (auth_method or PASSWORD).split(":", 1)[0]
    return kind if kind in (OAUTH, APP) else PASSWORD


def auth_provider_id(auth_method: str | None) -> int | None:
    kind, _, rest = (auth_method or "").partition(":")
    return int(rest) if kind in (OAUTH, APP) and rest.isdigit() and len(rest) < 10 else None


def oauth_mechanism(offered) -> str | None:
    """The SASL mechanism for a bearer token among those the server advertises: the standard one first."""
    offered = {m.upper() for m in offered}
    return next((m for m in (OAUTHBEARER, XOAUTH2) if m in offered), None)


def oauth_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    """The client's SASL message for a bearer token (RFC 7628 §3.1 for OAUTHBEARER; Google's XOAUTH2)."""
    if mechanism == OAUTHBEARER:
        return f"n,a={user.replace('=', '=3D').replace(',', '=2C')},\x01host={host}\x01port={port}\x01" \
               f"auth=Bearer {token}\x01\x01".encode()
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauth_abort(mechanism: str) -> bytes:
    """What a client answers to the server's error challenge, so the server can say no (RFC 7628 §3.2.3)."""
    return b"\x01" if mechanism == OAUTHBEARER else b""


class MailboxError(UserError):
    """A connection problem with one cause (`kind`) and a message an admin can act on."""

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


@dataclass(frozen=True)
class Endpoint:
    """Where a secret is sent and how it is protected. A change to any field asks for the secret again, or a
    space admin could send the stored password in clear, to another host, or through a CA of their own."""

    protocol: str  # pop, imap, pops, imaps, smtp
    host: str
    port: int
    username: str
    security: str  # tls, starttls, none
    trusted_ca_pem: str = ""
    auth: str = PASSWORD  # password, oauth:<provider>, app:<provider>

    @classmethod
    def of(cls, protocol: str, host: str, port: int, username: str | None, security: str,
           trusted_ca_pem: str | None, auth: str | None = None) -> "Endpoint":
        return cls(protocol, (host or "").strip().lower().rstrip("."), int(port or 0), username or "", security,
                   (trusted_ca_pem or "").strip(), auth or PASSWORD)


def mailbox_security(protocol: str, require_starttls: bool) -> str:
    if protocol in ("pops", "imaps"):
        return IMPLICIT_TLS
    return STARTTLS if require_starttls else PLAIN


def fresh_secret(auth_method: str, password: str, oauth_ticket: str) -> bool:
    """Whether a form gives a new secret: a password typed, a sign-in just made, or app-only access (which signs
    in with the provider's own secret, the system admin's)."""
    kind = auth_kind(auth_method)
    return bool(password) if kind == PASSWORD else bool(oauth_ticket) if kind == OAUTH else True


def needs_secret_again(stored: Endpoint | None, wanted: Endpoint, has_stored_secret: bool) -> bool:
    """The one rule: the stored secret may only be reused for the very endpoint it was entered for."""
    return stored is None or not has_stored_secret or stored != wanted


def secret_again_message(stored: Endpoint | None, wanted: Endpoint, has_stored_secret: bool) -> str:
    oauth = auth_kind(wanted.auth) == OAUTH
    if stored is None or not has_stored_secret:
        return "Connect the mailbox with its provider (the Connect button)." if oauth else "Enter the mailbox password."
    changed = [label for label, field in (("protocol", "protocol"), ("host", "host"), ("port", "port"),
                                          ("username", "username"), ("encryption", "security"),
                                          ("trusted CA certificate", "trusted_ca_pem"), ("authentication", "auth"))
               if getattr(stored, field) != getattr(wanted, field)]
    again = "connect with the provider again" if oauth else "enter the password again"
    return f"You changed the {', '.join(changed)}: {again}, so the sign-in goes only where you meant it to."


@dataclass
class ConnectionData:
    """A mailbox connection as a form gives it: the password is "" on edit to keep the stored one."""

    protocol: str
    host: str
    port: int
    username: str
    password: str
    require_starttls: bool
    folder: str
    trusted_ca_pem: str
    auth_method: str = PASSWORD
    oauth_ticket: str = ""  # names a sign-in with the provider just finished in this form (webapp/oauth)
    exclusive_mailbox: bool = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.of(self.protocol, self.host, self.port, self.username,
                           mailbox_security(self.protocol, self.require_starttls), self.trusted_ca_pem,
                           self.auth_method)

    @classmethod
    def from_stored(cls, values: dict, trusted_ca_pem: str | None) -> "ConnectionData":
        """Rebuilt from what a Test Connection stored (no password; other keys ignored)."""
        names = {f.name for f in fields(cls)} - {"password", "trusted_ca_pem", "oauth_ticket"}
        return cls(password="", trusted_ca_pem=trusted_ca_pem or "", **{k: v for k, v in values.items() if k in names})

    def secret_problem(self, stored: Endpoint | None, has_stored_secret: bool) -> str | None:
        """Why the secret must be given again for this endpoint, or None when the stored one may be reused."""
        if (fresh_secret(self.auth_method, self.password, self.oauth_ticket)
                or not needs_secret_again(stored, self.endpoint, has_stored_secret)):
            return None
        return secret_again_message(stored, self.endpoint, has_stored_secret)


@dataclass(frozen=True)
class MailboxSettings:
    protocol: str
    host: str
    port: int
    username: str
    password: str
    require_starttls: bool = True
    folder: str = "INBOX"
    trusted_ca_pem: str | None = None
    timeout: float = 30.0
    auth: str = PASSWORD  # password, or oauth: `password` then holds a bearer token
    exclusive: bool = False  # the mailbox is Spacemail's alone: a plain EXPUNGE may be used (no UIDPLUS)

    @property
    def implicit_tls(self) -> bool:
        return self.protocol in ("pops", "imaps")

    @property
    def uses_starttls(self) -> bool:
        return not self.implicit_tls and self.require_starttls

    @property
    def is_imap(self) -> bool:
        return self.protocol in ("imap", "imaps")

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"MailboxSettings({self.protocol}://{self.username}@{self.host}:{self.port})"


class SignIn:
    """How a stored connection signs in (mailboxes and SMTP servers alike): a password, or an OAuth grant."""

    auth_method: Mapped[str] = mapped_column(db.String(20), default=PASSWORD)
    oauth_grant_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_grants.id", ondelete="SET NULL"))

    @property
    def has_stored_secret(self) -> bool:
        if auth_kind(self.auth_method) == PASSWORD:
            return bool(self.password_encrypted)
        return self.oauth_grant_id is not None

    def apply_sign_in(self, auth_method: str, password: str, grant_id: int | None) -> None:
        """A new password is encrypted; a new grant replaces the old; switching kind drops the other secret."""
        self.auth_method = auth_method or PASSWORD
        if auth_kind(self.auth_method) == PASSWORD:
            self.oauth_grant_id = None
            if password:
                self.password_encrypted = secret_box().encrypt(password)
        else:
            self.password_encrypted = None
            if grant_id is not None:
                self.oauth_grant_id = grant_id


class MailConnection(SignIn):
    """Columns and behaviour every stored mailbox shares (mail accounts, the reply mailbox): built in one place."""

    protocol: Mapped[str] = mapped_column(db.String(8), default="imaps")
    host: Mapped[str] = mapped_column(db.String(253), default="")
    port: Mapped[int] = mapped_column(default=993)
    username: Mapped[str] = mapped_column(db.String(254), default="")
    require_starttls: Mapped[bool] = mapped_column(default=True)
    folder: Mapped[str] = mapped_column(db.String(200), default="INBOX")
    trusted_ca_pem: Mapped[str | None] = mapped_column(db.Text)
    exclusive_mailbox: Mapped[bool] = mapped_column(default=False)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.of(self.protocol, self.host, self.port, self.username,
                           mailbox_security(self.protocol, self.require_starttls), self.trusted_ca_pem,
                           self.auth_method)

    def apply_connection(self, data, grant_id: int | None = None) -> None:
        """Copy the connection fields of `data` (AccountData-like), and the new password or grant."""
        self.protocol, self.host, self.port = data.protocol, data.host.strip().lower(), data.port
        self.username, self.folder = data.username, data.folder or "INBOX"
        self.require_starttls = data.require_starttls if data.protocol in ("pop", "imap") else False
        self.trusted_ca_pem = data.trusted_ca_pem or None
        self.exclusive_mailbox = bool(getattr(data, "exclusive_mailbox", False))
        self.apply_sign_in(data.auth_method, data.password, grant_id)


def settings_for(values, secret: str, timeout: float | None = None) -> MailboxSettings:
    """MailboxSettings from anything with the connection fields (a stored mailbox, a form's data); `secret` is
    the password or, for a connection that signs in with a provider, a current access token."""
    protocol = values.protocol
    return MailboxSettings(
        protocol=protocol, host=values.host.strip().lower(), port=int(values.port), username=values.username,
        password=secret, require_starttls=bool(values.require_starttls) and protocol in ("pop", "imap"),
        folder=values.folder or "INBOX", trusted_ca_pem=values.trusted_ca_pem or None,
        timeout=timeout if timeout is not None else current_app.config["MAIL_TIMEOUT_SECONDS"],
        auth=PASSWORD if auth_kind(getattr(values, "auth_method", None)) == PASSWORD else OAUTH,
        exclusive=bool(getattr(values, "exclusive_mailbox", False)),
    )


def check_fields(settings: MailboxSettings) -> None:
    """CR, LF or NUL would let a field add protocol commands (poplib and imaplib send them verbatim)."""
    for label, value in (("host", settings.host), ("username", settings.username),
                         ("password", settings.password), ("folder", settings.folder)):
        if any(c in value for c in _FORBIDDEN):
            raise MailboxError("invalid", f"The {label} contains a line break or NUL character.")
    if not 0 < settings.port < 65536:
        raise MailboxError("invalid", "The port must be between 1 and 65535.")
    if settings.auth == OAUTH and not (settings.implicit_tls or settings.uses_starttls):
        raise MailboxError("oauth_needs_tls", "Signing in with a provider needs an encrypted connection: choose "
                                              "IMAPS or POPS, or require STARTTLS. A token never goes in plain text.")


def parse_allowlist(text: str) -> tuple[list, set[str]]:
    """Lines of networks (10.0.0.0/8, 127.0.0.1) and host names; anything else is ignored by the caller's form."""
    networks, names = [], set()
    for line in (text or "").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return networks, names


def _kind_of_address(ip) -> str:
    """Why an address is not public, in words (the address itself is never shown: it would map the network)."""
    if ip.is_loopback or ip.is_unspecified:
        return "a loopback address (this machine itself)"
    if ip.is_link_local:
        return "a link-local address (such as a cloud metadata service)"
    if ip.is_private:
        return "a private network address"
    return "a reserved or otherwise non-public address"


def resolve_allowed(host: str, port: int, allowlist: str) -> str:
    """Resolve `host` once and return an address the policy allows; the connection goes there and nowhere else."""
    networks, names = parse_allowlist(allowlist)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise MailboxError("name_not_found", f"The name {host} was not found. Check the hostname for typos.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if host.lower().rstrip(".") in names or ip.is_global or any(ip in net for net in networks):
            return address
    why = _kind_of_address(ipaddress.ip_address(addresses[0]))
    raise MailboxError(
        "host_not_allowed",
        f"The host {host} is not allowed: it is {why}, and mail servers must be public unless allowed. "
        "A system administrator can allow it in Administration › Manage apps › Mail archiving settings, under "
        "\"Private hosts and networks mail accounts may reach\".",
    )


def checked_address(host: str, port: int) -> str:
    """The host policy of this site (public addresses, plus the admin's allowlist), applied in one place."""
    from webapp.settings import SiteSettings

    return resolve_allowed(host, port, SiteSettings.get().mail_host_allowlist)


def tls_context(trusted_ca_pem: str | None, error=MailboxError) -> ssl.SSLContext:
    """The system's trust store, plus the server's own CA when it has one. Never unverified."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if trusted_ca_pem:
        try:
            context.load_verify_locations(cadata=trusted_ca_pem)
        except (ssl.SSLError, ValueError):
            raise error("invalid", "The trusted CA certificate is not a valid PEM certificate.",
                        "Paste the CA certificate in PEM form.") from None
    return context


def connect_socket(address: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        raise MailboxError("refused", f"Nothing accepts connections on port {port}. Check the port and protocol.") from None
    except (TimeoutError, socket.timeout):
        raise timed_out(timeout) from None
    except OSError as exc:
        raise MailboxError("unreachable", f"The server cannot be reached ({exc.strerror or 'network error'}).") from None


def timed_out(seconds: float | None = None) -> MailboxError:
    within = f"within {seconds:g} second{'' if seconds == 1 else 's'} (the timeout)" if seconds else "in time"
    return MailboxError("timeout", f"The server did not answer {within}. Check the host, the port and any firewall.")


def describe_untrusted(exc: ssl.SSLCertVerificationError, peek) -> str:
    """Why a certificate is not trusted, with its subject and issuer read over a throwaway handshake."""
    detail = exc.verify_message or "verification failed"
    try:
        cert = x509.load_der_x509_certificate(peek())
        who = f" Subject: {cert.subject.rfc4514_string()}; issuer: {cert.issuer.rfc4514_string()}."
    except Exception:
        who = ""
    return f"The server's certificate is not trusted ({detail}).{who}"


def peek_certificate(address: str, port: int, host: str, timeout: float, preamble=None) -> bytes:
    """The server's certificate, for the error message only: nothing is sent over this connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as raw:
        if preamble:
            preamble(raw)
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)
