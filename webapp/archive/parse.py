"""Raw bytes -> the fields the archive shows and searches, within limits. Never raises on bad mail."""
import email
import email.parser
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import Header, decode_header, make_header
from email.message import Message
from html.parser import HTMLParser

HEADER_LIMIT = 100 * 1024
MAX_PARTS = 1000
MAX_DEPTH = 50
TEXT_LIMIT = 1024 * 1024
_MSGID = re.compile(r"<([^<>\s]{1,290})>")
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    msg = _message(raw, headers_only)
    _headers(result, msg)
    if not headers_only:
        _body(result, msg)


def _message(raw: bytes, headers_only: bool) -> Message:
    """compat32 structure with explicit header decoding (_text, _addresses, _date).

    compat32 with explicit decoding parses several times faster than policy.default for the same stored fields
    (docs/benchmarks.md, B1), and never raises on the real-world headers that make policy.default fail, so
    there is nothing to fall back from."""
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=headers_only)


def _text(value) -> str:
    """Any header value as clean text: RFC 2047 decoded, control characters removed."""
    if value is None:
        return ""
    if isinstance(value, Header):  # compat32 wraps raw 8-bit header bytes as "unknown-8bit": read them as UTF-8
        value = "".join(_chunk(part, charset) for part, charset in decode_header(value))
    if isinstance(value, str) and _SURROGATE.search(value):  # raw 8-bit header bytes (RFC 6532 mail): UTF-8
        value = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    try:
        text = str(make_header(decode_header(str(value)))) if isinstance(value, str) and "=?" in value else str(value)
    except Exception:
        text = str(value)
    return _CONTROL.sub("", text.replace("\r", " ").replace("\n", " ")).strip()


def _chunk(part, charset) -> str:
    if isinstance(part, str):
        return part
    try:
        return part.decode(charset if charset and charset != "unknown-8bit" else "utf-8", "replace")
    except LookupError:
        return part.decode("utf-8", "replace")


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    values = [_text(v) for v in msg.get_all(name, [])]
    return [(n, a) for n, a in email.utils.getaddresses(values) if a or n]


def _headers(result: Parsed, msg: Message) -> None:
    result.subject = _text(msg.get("Subject"))[:2000]
    sender = _addresses(msg, "From")
    if sender:
        result.from_name, result.from_addr = sender[0][0][:300], sender[0][1][:300].lower()
    result.to_addrs = ", ".join(email.utils.formataddr(a) for a in _addresses(msg, "To"))[:10000]
    result.cc_addrs = ", ".join(email.utils.formataddr(a) for a in _addresses(msg, "Cc"))[:10000]
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


def _body(result: Parsed, msg: Message) -> None:
    texts, length, count = [], 0, 0
    for part in msg.walk():
        count += 1
        if count > MAX_PARTS:
            result.problem = f"more than {MAX_PARTS} parts: the rest is not indexed"
            break
        if part.is_multipart():
            continue
        filename = _filename(part)
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            payload = part.get_payload(decode=True) or b""
            result.attachments.append({"name": filename or "", "type": ctype, "size": len(payload)})
            continue
        if length < TEXT_LIMIT and ctype in ("text/plain", "text/html"):
            text = _decoded(part)
            text = _html_text(text) if ctype == "text/html" else text
            texts.append(text[:TEXT_LIMIT - length])
            length += len(texts[-1])
    result.text = "\n".join(texts)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return _text(name)[:255] if name else ""


def _decoded(part: Message) -> str:
    """The part's text; an unknown or lying charset falls back instead of raising LookupError."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, TypeError):
        return payload.decode("utf-8", errors="replace")


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
