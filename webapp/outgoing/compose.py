"""Building the bytes of one mail: safe headers, the From-name template, text and inlined-CSS HTML."""
import binascii
import functools
import random
import re
import string
import time
import unicodedata
from datetime import datetime, timezone
from email.headerregistry import Address
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from urllib.parse import urlsplit

import css_inline

from webapp.outgoing.models import SEALED_KINDS
from webapp.outgoing.smtp import PLAIN_ADDRESS, SmtpProfile, crlf
from webapp.security import secret_box

# Headers a queued mail may carry besides the ones built here (issue 6 adds List-*, threading).
EXTRA_HEADERS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "In-Reply-To", "References",
                 "X-Spacemail-Reason")
_inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=False, keep_style_tags=False)


class _FromTemplate(string.Template):
    """${fullname}, ${email} and ${email.hostname}; anything else stays as written."""

    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)?)"


def clean_header_text(value: str, limit: int = 300) -> str:
    """One line of text: no CR, LF, NUL, Unicode line breaks or other control characters.

    A literal "=?" gets an invisible word joiner: Python 3.11.7's header folder decodes user text that looks
    like an encoded word ("=?utf-8?q?=0ABcc:...?=") and would write its newline raw (CVE-2024-6923).
    """
    value = value or ""
    if not value.isprintable():  # printable text holds none of them (the per-character test is the slow part)
        value = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in value)
    return " ".join(value.split())[:limit].replace("=?", "=\u2060?")


FROM_VARIABLES = ("fullname", "email", "email.hostname")


def _variables(template: str) -> list[str]:
    return [m.group("named") or m.group("braced") for m in _FromTemplate.pattern.finditer(template or "")
            if m.group("named") or m.group("braced")]


def unknown_variables(template: str) -> list[str]:
    """The ${names} (or $names) in a From-name template that are not one of FROM_VARIABLES; an unclosed "${" too."""
    found = [name for name in dict.fromkeys(_variables(template)) if name not in FROM_VARIABLES]
    return found + (["${"] if re.search(r"\$\{(?![_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)?\})", template or "") else [])


def from_name_for(template: str, actor, site_name: str, from_address: str) -> str:
    """An actor's mail: the template with their name. The site's own mail (reports, invitations, tests by no one):
    the site's name alone when the template speaks of a person, so there is no "Team Hub via Team Hub"."""
    if actor is not None:
        return render_from_name(template, actor.full_name, actor.email)
    if _variables(template):
        return clean_header_text(site_name, 200)
    return render_from_name(template, site_name, from_address)


@functools.lru_cache(maxsize=1024)  # pure; an event's mails all carry their actor's name
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
    text = text or ""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def inline_css(html: str) -> str:
    """Styles moved into style attributes; <link> stylesheets dropped, never fetched."""
    return _inliner.inline(html)


def build(mail, profile: SmtpProfile, actor=None, site_name: str = "Spacemail") -> tuple[str, bytes]:
    """The envelope sender and the bytes of `mail` as sent through `profile`."""
    from_name = from_name_for(profile.from_name, actor, site_name, profile.from_address)
    headers = [("From", _mailbox(from_name, profile.from_address)),
               ("To", _mailbox("", mail.recipient))]
    extra = mail.headers or {}
    reply_name, reply_address = parseaddr(extra["Reply-To"]) if extra.get("Reply-To") else ("", "")
    if reply_address:  # a signed reply-by-email address wins over the server's policy
        headers.append(("Reply-To", _mailbox(clean_header_text(reply_name, 200), reply_address)))
    elif profile.reply_to_policy == "actor" and actor is not None and actor.email:
        headers.append(("Reply-To", _mailbox(clean_header_text(actor.full_name, 200), actor.email)))
    headers += [("Subject", _subject(profile.subject_prefix, mail.subject)), ("Date", _date(int(time.time()))),
                ("Message-ID", clean_header_text(mail.message_id, 250)), ("Auto-Submitted", "auto-generated")]
    for name in EXTRA_HEADERS:
        value = extra.get(name)
        if value and (value := _extra_header(name, value)):
            headers.append((name, value))
    text, html = opened(mail)
    parts = [_text_part(normalize_body(text), "plain")]
    if html:
        if _STYLED.search(html):  # notifications arrive inlined already (once per event, not once per mail)
            html = inline_css(html)
        parts.append(_text_part(normalize_body(html), "html"))
    if len(parts) == 1:
        headers += [("MIME-Version", "1.0"), *parts[0][0]]
        body = parts[0][1]
    else:
        boundary = _boundary(parts)
        headers += [("MIME-Version", "1.0"), ("Content-Type", f'multipart/alternative; boundary="{boundary}"')]
        delimiter = f"--{boundary}\r\n".encode("ascii")
        body = b"".join(delimiter + _head(part_headers) + b"\r\n" + part_body + b"\r\n"
                        for part_headers, part_body in parts) + f"--{boundary}--\r\n".encode("ascii")
    data = _head(headers) + b"\r\n" + body
    _check_headers(data, [name for name, _value in headers])
    return profile.from_address, data


def opened(mail) -> tuple[str, str | None]:
    """The text and HTML bodies of a queued mail, decrypted when its kind keeps them sealed."""
    if mail.kind in SEALED_KINDS:
        box = secret_box()
        return box.decrypt(mail.body_text), mail.body_html and box.decrypt(mail.body_html)
    return mail.body_text, mail.body_html


_STYLED = re.compile(r"<(style|link)\b", re.IGNORECASE)


def _head(headers: list[tuple[str, str]]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")


def _text_part(text: str, subtype: str) -> tuple[list[tuple[str, str]], bytes]:
    """A text part's headers and CRLF body: 7bit when it is short-lined ASCII, else quoted-printable UTF-8
    (readable, and every line short).

    Written here rather than by the email package's MIME classes and generator, which cost more than the SMTP
    conversation itself (docs/benchmarks.md, B6); binascii's quoted-printable encoder is the one quopri uses.
    """
    if not text.endswith("\n"):
        text += "\n"  # a text part ends with a line break, as set_content wrote it
    if _cte(text) == "7bit":
        return ([("Content-Type", f'text/{subtype}; charset="us-ascii"'), ("Content-Transfer-Encoding", "7bit")],
                crlf(text.encode("ascii")))
    return ([("Content-Type", f'text/{subtype}; charset="utf-8"'), ("Content-Transfer-Encoding", "quoted-printable")],
            crlf(binascii.b2a_qp(text.encode("utf-8"), istext=True)))


# Boundaries need not be secret, only absent from the parts (checked below): a seeded generator, not the system's
# (one getrandom call a mail, 5% of a sender's time in B6).
_random = random.Random()


def _boundary(parts) -> str:
    """A random boundary no part's line starts with (quoted-printable never writes "=_"; 7bit text might)."""
    while True:
        boundary = f"=_spacemail_{_random.getrandbits(96):024x}"
        if not any(boundary.encode("ascii") in body for _headers, body in parts):
            return boundary


@functools.lru_cache(maxsize=1024)  # pure; an event's mails all carry its subject
def _subject(prefix: str, subject: str) -> str:
    words = (clean_header_text(prefix, 100), clean_header_text(subject, 400))
    return _text_header("Subject", " ".join(word for word in words if word))


@functools.lru_cache(maxsize=1024)  # pure; most of a notification's list headers recur in every mail of its event
def _extra_header(name: str, value: str) -> str:
    """A header from EXTRA_HEADERS as written, or "" when nothing is left of it."""
    value = clean_header_text(value, 900)
    return value and _text_header(name, value)


@functools.lru_cache(maxsize=2)  # one second's mails share their Date
def _date(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, timezone.utc))


@functools.lru_cache(maxsize=1024)  # pure; a notification's subject and From recur in every mail
def _text_header(name: str, value: str) -> str:
    """RFC 2047 words for anything not plain ASCII, folded so that unfolding gives back exactly `value`.

    Written by email.header rather than policy.default's folder, which drops spaces at encoded-word
    boundaries and, on Python 3.11.7, decodes look-alike words in user text.
    """
    if value.isascii() and len(name) + 2 + len(value) <= 998:
        return value  # one line within SMTP's limit: URLs and ids stay whole
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name).encode(linesep="\r\n")


@functools.lru_cache(maxsize=1024)
def _mailbox(display_name: str, address: str) -> str:
    # A plain dot-atom address is its own addr-spec; anything else is parsed, which raises unless it is one address.
    addr_spec = address if PLAIN_ADDRESS.fullmatch(address) else Address(addr_spec=address).addr_spec
    if not display_name:
        return addr_spec
    if display_name.isascii():
        return formataddr((display_name, addr_spec))  # quoted and escaped where needed
    return f"{Header(display_name, 'utf-8').encode(linesep=chr(13) + chr(10))} <{addr_spec}>"


def _check_headers(data: bytes, intended: list[str]) -> None:
    """The bytes carry exactly the headers set here: a last guard against injection by any path.

    Stricter than a mail parser, and a tenth of its cost: every line of the head ends in CRLF (no bare CR or LF,
    which a parser would take as a line end, and no NUL), and the lines that do not continue a header start with
    the names set here, in order, each followed by a colon."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    if not _head_pattern(tuple(intended)).fullmatch(head):
        raise ValueError("the composed headers differ from the ones set; the mail was not sent")


@functools.lru_cache(maxsize=64)
def _head_pattern(names: tuple[str, ...]) -> re.Pattern:
    """A head of exactly these header lines, in this order (names as written, any case), each maybe folded."""
    line = rb"[^\r\n\0]*(?:\r\n[ \t][^\r\n\0]*)*\r\n"
    return re.compile(b"".join(re.escape(name.encode("ascii")) + b":" + line for name in names), re.IGNORECASE)


def _cte(text: str) -> str:
    """Quoted-printable keeps the text readable and every line short, whatever the body holds. (The lines' lengths
    by a split: the regular expression [^\n]{900} tried every position of every line, 10-130 µs a part.)"""
    return "7bit" if text.isascii() and max(map(len, text.split("\n"))) < 900 else "quoted-printable"
