"""DKIM per sending domain (dkimpy): generate a key, show the DNS record to publish, sign every mail."""
import base64
import re
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from webapp.errors import UserError
from webapp.extensions import db
from webapp.outgoing.models import DkimKey
from webapp.security import secret_box

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
KEY_BITS = 2048


class DkimError(UserError):
    """A DKIM setting the admin can fix."""


@dataclass(frozen=True)
class DnsRecord:
    name: str  # selector._domainkey.domain
    value: str  # v=DKIM1; k=rsa; p=…


def record_for(key: DkimKey) -> DnsRecord:
    return DnsRecord(f"{key.selector}._domainkey.{key.domain}", f"v=DKIM1; k=rsa; p={key.public_key}")


def keys() -> list[DkimKey]:
    return list(db.session.scalars(select(DkimKey).order_by(DkimKey.domain)))


def _valid_domain(domain: str) -> str:
    domain = (domain or "").strip().lower().rstrip(".")
    if not domain or len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")) \
            or "." not in domain:
        raise DkimError(f"{domain or 'An empty name'} is not a domain name (like example.org).")
    return domain


def generate(domain: str, selector: str) -> DkimKey:
    """A new 2048-bit RSA key for `domain` (replacing its old one); the record to publish is record_for(key)."""
    domain, selector = _valid_domain(domain), (selector or "").strip().lower()
    if not _LABEL.match(selector):
        raise DkimError("The selector is one DNS label: letters, digits and hyphens (like spacemail2026).")
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode("ascii")
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode("ascii")
    key = db.session.scalar(select(DkimKey).where(DkimKey.domain == domain)) or DkimKey(domain=domain)
    key.selector, key.private_key_encrypted, key.public_key, key.enabled = selector, secret_box().encrypt(pem), \
        public, True
    db.session.add(key)
    return key


def signer():
    """A function (message bytes, From address) -> the bytes with a DKIM-Signature for the From domain's key,
    or unchanged when that domain has none; the keys are read and decrypted once per batch."""
    enabled = {k.domain: (k.selector.encode(), secret_box().decrypt(k.private_key_encrypted).encode())
               for k in db.session.scalars(select(DkimKey).where(DkimKey.enabled))}
    if not enabled:
        return lambda data, _from_address: data

    def sign(data: bytes, from_address: str) -> bytes:
        domain = from_address.rpartition("@")[2].lower()
        if domain not in enabled:
            return data
        selector, private = enabled[domain]
        return dkim.sign(data, selector, domain.encode(), private, linesep=b"\r\n") + data

    return sign
