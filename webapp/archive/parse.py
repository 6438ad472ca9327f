"""Raw bytes -> the fields the archive shows and searches, within limits. Never raises on bad mail."""
import email
import email.parser
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from html.parser import HTMLParser

from webapp.archive.headers import (
    LENIENT, addresses, decode_bytes, format_address, has_8bit, header_text, raw_text,
)

HEADER_LIMIT = 100 * 1024
MAX_PARTS = 1000
MAX_DEPTH = 50
TEXT_LIMIT = 1024 * 1024
_MSGID = re.compile(r"<([^<>\s]{1,290})>")
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)


@dataclass
class Parsed:
    sha256: str
    size: int
    subject: str = ""
    from_name: str = ""
    from_addr: str = ""
    to_addrs: str = ""
    cc_addrs: str = ""
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    text: str = ""
    attachments: list[dict] = field(default_factory=list)
    problem: str | None = None
    search_vector: str | None = None  # PostgreSQL's index of it (search.pg_vector), made with the parse


def parse(raw: bytes, size_cap: int, sha256: str | None = None) -> Parsed:
    """Parse what is safe to parse; anything beyond the limits is recorded as the problem, not raised."""
    result = Parsed(sha256=sha256 or hashlib.sha256(raw).hexdigest(), size=len(raw))
    try:
        _parse_into(result, raw, size_cap)
    except Exception as exc:  # hostile mail must never stop a fetch: the raw bytes are archived anyway
        result.problem = f"could not be parsed ({type(exc).__name__})"
    return result


def _header_end(raw: bytes) -> int:
    ends = [i for i in (raw.find(b"\r\n\r\n", 0, HEADER_LIMIT + 4), raw.find(b"\n\n", 0, HEADER_LIMIT + 2)) if i >= 0]
    return min(ends) if ends else (len(raw) if len(raw) <= HEADER_LIMIT else -1)


def _parse_into(result: Parsed, raw: bytes, size_cap: int) -> None:
    if len(raw) > size_cap:
        result.problem = f"larger than the {size_cap // (1024 * 1024)} MB parsing limit"
        raw = raw[:_header_end(raw)] if 0 <= _header_end(raw) else b""
    if _header_end(raw) < 0:
        result.problem = "header block larger than 100 KB"
        return
    boundaries = raw.lower().count(b"boundary")  # an upper bound in one C pass first: the regex is slow
    structure_ok = ((boundaries <= MAX_DEPTH or len(_BOUNDARY.findall(raw)) <= MAX_DEPTH)
                    and raw.count(b"\n--") <= 2 * MAX_PARTS + 2)
    if not structure_ok and result.problem is None:
        result.problem = f"more than {MAX_PARTS} parts or {MAX_DEPTH} levels: headers only"
    headers_only = not structure_ok or result.problem is not None
    if headers_only:  # the parser would still read the body in as lines: 45 MB and a second for 100,000 parts
        raw = raw[:_header_end(raw)] + b"\r\n\r\n"
    msg = _message(raw, headers_only)
    _headers(result, msg)
    if not headers_only:
        _body(result, msg)


def _message(raw: bytes, headers_only: bool) -> Message:
    """compat32 structure with explicit header decoding (webapp/archive/headers.py).

    compat32 with explicit decoding parses several times faster than policy.default for the same stored fields
    (docs/benchmarks.md, B1), and never raises on the real-world headers that make policy.default fail; its
    lenient variant keeps raw 8-bit header bytes readable as str instead of a Header object."""
    return email.parser.BytesParser(policy=LENIENT).parsebytes(raw, headersonly=headers_only)


def message_from(raw: bytes) -> Message:
    return _message(raw, False)


def _text(value, fallback=None) -> str:
    """Any header value as clean text: raw 8-bit read, RFC 2047 decoded word by word, control characters gone."""
    return header_text(value, fallback)


def header_charset(msg: Message) -> str | None:
    """The charset raw 8-bit header bytes most likely share: the message's own, else its first text part's."""
    for _, part in zip(range(20), msg.walk()):
        charset = content_charset(part)
        if charset:
            return charset
    return None


def content_charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except (LookupError, UnicodeError, TypeError, ValueError):
        return None


def _headers(result: Parsed, msg: Message) -> None:
    fallback = header_charset(msg) if has_8bit(msg) else None  # only raw 8-bit header bytes need a guess
    result.subject = _text(msg.get("Subject"), fallback)[:2000]
    sender = addresses(msg.get_all("From", []), fallback)
    if sender:
        result.from_name, result.from_addr = sender[0][0][:300], sender[0][1][:300].lower()
    result.to_addrs = ", ".join(format_address(*a) for a in addresses(msg.get_all("To", []), fallback))[:10000]
    result.cc_addrs = ", ".join(format_address(*a) for a in addresses(msg.get_all("Cc", []), fallback))[:10000]
    result.date = _date(msg.get("Date"))
    ids = _MSGID.findall(_text(msg.get("Message-ID")))
    result.message_id = ids[0] if ids else None
    reply = _MSGID.findall(_text(msg.get("In-Reply-To")))
    result.in_reply_to = reply[0] if reply else None
    refs = _MSGID.findall(_text(msg.get("References")))[-100:]
    result.references = list(dict.fromkeys(refs + ([result.in_reply_to] if result.in_reply_to else [])))


def _date(value) -> datetime | None:
    try:
        date = email.utils.parsedate_to_datetime(_text(value))
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=timezone.utc)
    return date.astimezone(timezone.utc)


BODY_TYPES = ("text/plain", "text/html")
TEXT, HTML, ATTACHMENT, INLINE = "text", "html", "attachment", "inline"


def disposition(part: Message) -> str:
    return raw_text(part.get("Content-Disposition")).split(";")[0].strip().lower()


def roles(msg: Message, overflow: list | None = None):
    """(index, part, role, inside an attached message) for each leaf part, as a mail client reads them (the rules
    of email.message.get_body): a text/plain or text/html part not marked "attachment" is body, even when it
    carries a file name, unless the message already has a body and this one is a named file (invoice.html after
    the text is a file to open, not the message); an
    image with a Content-ID (shown by the HTML body) is inline; everything else is an attachment."""
    seen, attached_from = set(), None
    for index, part in enumerate(msg.walk()):
        if index >= MAX_PARTS:
            if overflow is not None:
                overflow.append(index)
            return
        if attached_from is None and index and part.get_content_type() == "message/rfc822":
            attached_from = index
        if part.is_multipart():
            continue
        ctype, how = part.get_content_type(), disposition(part)
        named = ctype in BODY_TYPES and bool(_filename(part))
        inside = attached_from is not None
        if ctype in BODY_TYPES and how != "attachment" and not (named and seen):
            seen.add(ctype)
            yield index, part, TEXT if ctype == "text/plain" else HTML, inside
        elif ctype.startswith("image/") and part.get("Content-ID") and how != "attachment":
            yield index, part, INLINE, inside  # an image the HTML body shows (cid:)
        else:
            yield index, part, ATTACHMENT, inside


def _body(result: Parsed, msg: Message) -> None:
    texts, length, overflow = [], 0, []
    for _, part, role, _inside in roles(msg, overflow):
        ctype = part.get_content_type()
        if role in (ATTACHMENT, INLINE):
            payload = part.get_payload(decode=True) or b""
            if role == ATTACHMENT:
                result.attachments.append({"name": safe_filename(_filename(part), ctype), "type": ctype,
                                           "size": len(payload)})
            if ctype not in BODY_TYPES:
                continue
        if length < TEXT_LIMIT and ctype in BODY_TYPES:  # attached text files are searchable too
            text = _decoded(part)
            text = _html_text(text) if ctype == "text/html" else text
            texts.append(text[:TEXT_LIMIT - length])
            length += len(texts[-1])
    if overflow:
        result.problem = f"more than {MAX_PARTS} parts: the rest is not indexed"
    result.text = "\n".join(texts)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return _text(name, content_charset(part))[:255] if name else ""


_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f]")


def safe_filename(name: str, content_type: str) -> str:
    """One name for showing and downloading: no line breaks, path parts ("attach/01" is "01") or bidi overrides
    (which disguise 'exe.pdf' as 'fdp.exe')."""
    name = _BIDI.sub("", name or "")
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).replace("\\", "/").split("/")[-1].strip(" .")
    return name[:200] or ("attachment" + {"text/plain": ".txt", "text/html": ".html"}.get(content_type, ""))


def _decoded(part: Message) -> str:
    """The part's text in its declared charset; a wrong or unknown one falls back (UTF-8, windows-1252)."""
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        payload = b""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogateescape")
    return decode_bytes(payload, content_charset(part))


class _Stripper(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def _html_text(html: str) -> str:
    """Words of an HTML part for the search index (the page itself sanitizes separately)."""
    stripper = _Stripper()
    stripper.feed(html)
    stripper.close()
    return re.sub(r"\s+", " ", " ".join(stripper.parts)).strip()
