"""Small helpers every form uses: input filters and the checks that keep header and protocol text clean."""
import ipaddress
import re

from cryptography import x509
from wtforms.validators import ValidationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def strip(value):
    return value.strip() if isinstance(value, str) else value


def no_control_chars(form, field):
    """Names and addresses later land in mail headers: no line breaks or control characters."""
    if field.data and _CONTROL.search(field.data):
        raise ValidationError("Line breaks and control characters are not allowed here.")


HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$")


def hostname(form, field):
    """A DNS name or an IP address, nothing else (it is handed to a mail client library as is)."""
    value = field.data or ""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not HOST_RE.match(value):
        raise ValidationError("Enter a host name such as mail.example.org, or an IP address.")


def no_line_breaks(form, field):
    """CR, LF or NUL in a protocol field would let it add commands of its own."""
    if field.data and any(c in field.data for c in "\r\n\x00"):
        raise ValidationError("Line breaks and NUL characters are not allowed here.")


def pem_certificates(form, field):
    """A trusted CA pasted as PEM: checked here so a typo is a form message, not a failed connection later."""
    if not field.data:
        return
    try:
        x509.load_pem_x509_certificates(field.data.encode())
    except ValueError:
        raise ValidationError("Paste the CA certificate in PEM form (-----BEGIN CERTIFICATE----- …).") from None
