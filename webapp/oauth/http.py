"""Talking to sign-in providers: HTTPS with verified certificates, the site's host policy (resolve once, connect
to the checked address), no redirects followed, answers bounded in size and time, one clear error per cause."""
import http.client
import ipaddress
import json
import socket
import ssl
from urllib.parse import urlencode, urlsplit

from flask import current_app

from webapp.errors import UserError
from webapp.mailnet import MailboxError, checked_address, tls_context

MAX_ANSWER = 256 * 1024


class ProviderError(UserError):
    """The provider could not be reached, answered garbage, or refused (`refused` with its OAuth error code)."""

    def __init__(self, kind: str, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.error = kind, message, error

    @property
    def refused(self) -> bool:
        return self.kind == "refused"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "The provider's address") -> tuple[str, str, int, str]:
    """(scheme, host, port, path-and-query) of an https URL; http only for loopback where configuration allows it
    (the tests' own authorization server)."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise ProviderError("invalid", f"{what} is not a valid URL.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and _is_loopback(host) and current_app.config.get("OAUTH_ALLOW_HTTP_LOOPBACK"):
        pass
    elif parts.scheme != "https":
        raise ProviderError("not_https", f"{what} must start with https:// (tokens never travel unencrypted).")
    if not host or parts.username or parts.password or any(c in url for c in "\r\n\x00 "):
        raise ProviderError("invalid", f"{what} is not a valid URL.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to the address the host policy checked, while TLS still verifies the provider's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=tls_context(None))
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedPlain(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def call(url: str, form: dict | None = None, *, what: str = "The provider") -> dict:
    """POST `form` (or GET) and return the JSON object the provider answered; ProviderError otherwise."""
    scheme, host, port, path = check_url(url, f"{what}'s address")
    timeout = current_app.config["OAUTH_TIMEOUT_SECONDS"]
    try:
        address = checked_address(host, port)
    except MailboxError as exc:
        raise ProviderError(exc.kind, exc.message.replace("mail servers must", "providers must")) from None
    conn = (_Pinned if scheme == "https" else _PinnedPlain)(host, port, address, timeout)
    body = urlencode(form).encode() if form is not None else None
    headers = {"Accept": "application/json", "User-Agent": "Spacemail"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        answer = conn.getresponse()
        raw = answer.read(MAX_ANSWER + 1)
    except ssl.SSLCertVerificationError as exc:
        raise ProviderError("certificate_untrusted", f"{what}'s certificate is not trusted "
                                                     f"({exc.verify_message or 'verification failed'}).") from None
    except (TimeoutError, socket.timeout):
        raise ProviderError("timeout", f"{what} did not answer within {timeout:g} seconds. Try again later.") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ProviderError("unreachable", f"{what} cannot be reached ({getattr(exc, 'strerror', None) or 'network error'}).") from None
    finally:
        conn.close()
    return _answer(answer.status, raw, what)


def _answer(status: int, raw: bytes, what: str) -> dict:
    if 300 <= status < 400:
        raise ProviderError("redirect", f"{what} answered with a redirect (HTTP {status}). Spacemail does not follow "
                                        "redirects from a provider: check the endpoint's address.")
    if len(raw) > MAX_ANSWER:
        raise ProviderError("garbage", f"{what} sent an answer too large to be a token (HTTP {status}).")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and 400 <= status < 500:
        error = _clean(data["error"], 60)
        detail = _clean(data.get("error_description") if isinstance(data.get("error_description"), str) else "", 300)
        raise ProviderError("refused", f"{what} refused: {error}" + (f" ({detail})" if detail else "") + ".",
                            error=error)
    if status >= 500:
        raise ProviderError("provider_down", f"{what} answered HTTP {status} (a problem on its side). Try again later.")
    if not isinstance(data, dict) or status != 200:
        raise ProviderError("garbage", f"{what} gave an answer that is not an OAuth 2.0 response (HTTP {status}).")
    return data


def _clean(text: str, limit: int) -> str:
    """A provider's own words, without control characters, cut short."""
    return "".join(c for c in text if c.isprintable())[:limit]
