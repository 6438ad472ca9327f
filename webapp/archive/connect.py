"""Reaching a mail server safely: field checks, the host policy, verified TLS, and one clear error."""
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

_FORBIDDEN = ("\r", "\n", "\x00")


class MailboxError(Exception):
    """A connection problem with one cause (`kind`) and a message a space admin can act on."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


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


def check_fields(settings: MailboxSettings) -> None:
    """CR, LF or NUL would let a field add protocol commands (poplib and imaplib send them verbatim)."""
    for label, value in (("host", settings.host), ("username", settings.username),
                         ("password", settings.password), ("folder", settings.folder)):
        if any(c in value for c in _FORBIDDEN):
            raise MailboxError("invalid", f"The {label} contains a line break or NUL character.")
    if not 0 < settings.port < 65536:
        raise MailboxError("invalid", "The port must be between 1 and 65535.")


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


def resolve_allowed(host: str, port: int, allowlist: str) -> str:
    """Resolve `host` once and return an address the policy allows; the connection goes there."""
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
    raise MailboxError(
        "host_not_allowed",
        f"Mail accounts may not reach {host} ({addresses[0]}): it is not a public address. "
        "A system administrator can allow this host or network under Administration › Mail archiving.",
    )


def tls_context(trusted_ca_pem: str | None) -> ssl.SSLContext:
    """The system's trust store, plus the account's own CA when it has one. Never unverified."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if trusted_ca_pem:
        try:
            context.load_verify_locations(cadata=trusted_ca_pem)
        except (ssl.SSLError, ValueError):
            raise MailboxError("invalid", "The trusted CA certificate is not a valid PEM certificate.") from None
    return context


def connect_socket(address: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        raise MailboxError("refused", f"Nothing accepts connections on port {port}. Check the port and protocol.") from None
    except (TimeoutError, socket.timeout):
        raise timed_out() from None
    except OSError as exc:
        raise MailboxError("unreachable", f"The server cannot be reached ({exc.strerror or 'network error'}).") from None


def timed_out() -> MailboxError:
    return MailboxError("timeout", "The server did not answer in time. Check the host, the port and any firewall.")


def untrusted_certificate(exc: ssl.SSLCertVerificationError, peek) -> MailboxError:
    """Explain an untrusted certificate with its subject and issuer, read over a throwaway handshake."""
    detail = exc.verify_message or "verification failed"
    try:
        der = peek()
        cert = x509.load_der_x509_certificate(der)
        who = f" Subject: {cert.subject.rfc4514_string()}; issuer: {cert.issuer.rfc4514_string()}."
    except Exception:
        who = ""
    return MailboxError(
        "certificate_untrusted",
        f"The server's certificate is not trusted ({detail}).{who} "
        "If this server uses its own CA, add that CA certificate (PEM) to the account.",
    )


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


def imap_utf7(folder: str) -> str:
    """RFC 3501 modified UTF-7, so folders like 'Archiv/Über' can be selected."""
    import base64

    out, pending = [], []

    def flush():
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            pending.clear()

    for ch in folder:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)
