"""Building the bytes of one mail: safe headers, the From-name template, text and inlined-CSS HTML."""
import re
import string
import unicodedata
from email import policy
from email.headerregistry import Address
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesHeaderParser
from io import BytesIO
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from urllib.parse import urlsplit

import css_inline

from webapp.outgoing.smtp import SmtpProfile, crlf
from webapp.timeutil import utcnow

# Headers a queued mail may carry besides the ones built here (issue 6 adds List-*, threading).
EXTRA_HEADERS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "In-Reply-To", "References",
                 "X-Spacemail-Reason")
_WIRE = policy.compat32.clone(linesep="\r\n")
_inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=False, keep_style_tags=False)


class _FromTemplate(string.Template):
    """${fullname}, ${email} and ${email.hostname}; anything else stays as written."""

    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)?)"


def clean_header_text(value: str, limit: int = 300) -> str:
    """One line of text: no CR, LF, NUL, Unicode line breaks or other control characters.

    A literal "=?" gets an invisible word joiner: Python 3.11.7's header folder decodes user text that looks
    like an encoded word ("=?utf-8?q?=0ABcc:...?=") and would write its newline raw (CVE-2024-6923).
    """
    value = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in value or "")
    return " ".join(value.split())[:limit].replace("=?", "=\u2060?")


def render_from_name(template: str, fullname: str, email: str) -> str:
    """The display name of From: the admin's template with the three variables, made safe for a header."""
    values = {"fullname": clean_header_text(fullname), "email": clean_header_text(email),
              "email.hostname": clean_header_text(email.rpartition("@")[2])}
    return clean_header_text(_FromTemplate(template or "").safe_substitute(values), 200)


def new_message_id(host: str | None = None) -> str:
    return make_msgid(idstring="spacemail", domain=host or "spacemail.invalid")


def message_id_host(base_url: str) -> str:
    return (urlsplit(base_url).hostname or "spacemail.invalid").lower()


def normalize_body(text: str) -> str:
    """Line endings as LF (the generator writes CRLF); nothing else in the text changes."""
    return re.sub(r"\r\n|\r|\n", "\n", text or "")


def inline_css(html: str) -> str:
    """Styles moved into style attributes; <link> stylesheets dropped, never fetched."""
    return _inliner.inline(html)


def build(mail, profile: SmtpProfile, actor=None, site_name: str = "Spacemail") -> tuple[str, bytes]:
    """The envelope sender and the bytes of `mail` as sent through `profile`."""
    fullname = actor.full_name if actor is not None else site_name
    email = actor.email if actor is not None else profile.from_address
    headers = [("From", _mailbox(render_from_name(profile.from_name, fullname, email), profile.from_address)),
               ("To", _mailbox("", mail.recipient))]
    reply_name, reply_address = parseaddr((mail.headers or {}).get("Reply-To") or "")
    if reply_address:  # a signed reply-by-email address wins over the server's policy
        headers.append(("Reply-To", _mailbox(clean_header_text(reply_name, 200), reply_address)))
    elif profile.reply_to_policy == "actor" and actor is not None and actor.email:
        headers.append(("Reply-To", _mailbox(clean_header_text(actor.full_name, 200), actor.email)))
    subject = " ".join(p for p in (clean_header_text(profile.subject_prefix, 100), clean_header_text(mail.subject, 400))
                       if p)
    headers += [("Subject", _text_header("Subject", subject)), ("Date", format_datetime(utcnow())),
                ("Message-ID", clean_header_text(mail.message_id, 250)), ("Auto-Submitted", "auto-generated")]
    for name in EXTRA_HEADERS:
        value = clean_header_text((mail.headers or {}).get(name) or "", 900)
        if value:
            headers.append((name, _text_header(name, value)))
    body = _text_part(normalize_body(mail.body_text), "plain")
    if mail.body_html:
        parts = [body, _text_part(normalize_body(inline_css(mail.body_html)), "html")]
        for part in parts:
            del part["MIME-Version"]  # only the top level carries it
        body = MIMEMultipart("alternative", _subparts=parts)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_WIRE).flatten(body)
    data = head + crlf(out.getvalue())
    _check_headers(data, [name for name, _value in headers] + list(body.keys()))
    return profile.from_address, data


def _text_part(text: str, subtype: str) -> MIMEText:
    """7bit when it is short-lined ASCII, else quoted-printable UTF-8 (readable, and every line short).

    compat32's MIME classes: policy.default's header registry cost more than the SMTP conversation here.
    """
    if not text.endswith("\n"):
        text += "\n"  # a text part ends with a line break, as set_content wrote it
    if _cte(text) == "7bit":
        return MIMEText(text, subtype, "us-ascii")
    charset = Charset("utf-8")
    charset.body_encoding = QP
    part = MIMEText("", subtype, None)
    del part["Content-Transfer-Encoding"]
    part.set_payload(text, charset)
    return part


def _text_header(name: str, value: str) -> str:
    """RFC 2047 words for anything not plain ASCII, folded so that unfolding gives back exactly `value`.

    Written by email.header rather than policy.default's folder, which drops spaces at encoded-word
    boundaries and, on Python 3.11.7, decodes look-alike words in user text.
    """
    if value.isascii() and len(name) + 2 + len(value) <= 998:
        return value  # one line within SMTP's limit: URLs and ids stay whole
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name).encode(linesep="\r\n")


def _mailbox(display_name: str, address: str) -> str:
    addr_spec = Address(addr_spec=address).addr_spec  # raises on anything that is not one address
    if not display_name:
        return addr_spec
    if display_name.isascii():
        return formataddr((display_name, addr_spec))  # quoted and escaped where needed
    return f"{Header(display_name, 'utf-8').encode(linesep=chr(13) + chr(10))} <{addr_spec}>"


def _check_headers(data: bytes, intended: list[str]) -> None:
    """The bytes carry exactly the headers set here: a last guard against injection by any path."""
    head = data.split(b"\r\n\r\n", 1)[0]
    found = [n.lower() for n in BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n").keys()]
    if found != [n.lower() for n in intended]:
        raise ValueError("the composed headers differ from the ones set; the mail was not sent")


def _cte(text: str) -> str:
    """Quoted-printable keeps the text readable and every line short, whatever the body holds."""
    return "7bit" if text.isascii() and all(len(line) < 900 for line in text.split("\n")) else "quoted-printable"
