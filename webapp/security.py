"""Secrets at rest, response headers and redirect safety."""
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class SecretBox:
    """Encrypts secrets with the first key and decrypts with any; rotate by putting a new key first."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("SPACEMAIL_ENCRYPTION_KEYS must hold at least one Fernet key")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("a stored secret cannot be decrypted with the configured keys") from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the first key (after a new key was put first)."""
        return self._fernet.rotate(token.encode()).decode()


def secret_box() -> SecretBox:
    return current_app.extensions["spacemail.secret_box"]


def safe_next(target: str | None, default: str) -> str:
    """Only same-site paths are followed after sign-in, never another host."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def set_security_headers(response):
    """Strict CSP (no inline script, htmx without eval), no sniffing, no framing, little referrer."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    return response
