"""An archived message as a reader sees it: its text or HTML body, attachments and inline images.

Re-parsed from the raw bytes (the source of truth) within the same limits as at ingest."""
import html
import re
from dataclasses import dataclass, field
from email.message import Message as EmailMessage

from markupsafe import Markup

from webapp.archive.headers import raw_text
from webapp.archive.parse import ATTACHMENT, HTML, MAX_PARTS, TEXT, _decoded, _filename, message_from, roles, safe_filename

filename_of = _filename  # a part's filename, decoded and cleaned of control characters

_URL = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]", re.I)
RISKY_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml")


@dataclass
class Attachment:
    index: int
    name: str
    content_type: str
    size: int


@dataclass
class Display:
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    cids: dict[str, int] = field(default_factory=dict)


def _parts(raw: bytes) -> list[EmailMessage]:
    try:
        msg = message_from(raw)
    except Exception:
        return []
    return [part for _, part in zip(range(MAX_PARTS), msg.walk())]


def load(raw: bytes, parse_problem: str | None) -> Display:
    """Bodies and attachments, read by the same rules as the index (parse.roles); a message over the limits is
    shown as its raw text only. Further inline text parts of the message itself (a list's footer) follow the
    first; those of an attached message are shown by opening it."""
    if parse_problem:
        return Display(text=raw[:200_000].decode("utf-8", "replace"))
    try:
        msg = message_from(raw)
    except Exception:
        return Display(text=raw[:200_000].decode("utf-8", "replace"))
    display, texts = Display(), []
    for index, part, role, inside in roles(msg):
        ctype = part.get_content_type()
        cid = raw_text(part.get("Content-ID")).strip().strip("<>")
        if cid:
            display.cids[cid] = index
        if role == TEXT and not (inside and texts):
            texts.append(_decoded(part))
        elif role == HTML and display.html is None and not inside:
            display.html = _decoded(part)
        elif role == ATTACHMENT or (role in (TEXT, HTML) and inside):
            payload = part.get_payload(decode=True) or b""
            display.attachments.append(Attachment(index, safe_filename(_filename(part), ctype), ctype, len(payload)))
    display.text = "\n\n".join(texts) if texts else None
    return display


def part(raw: bytes, index: int) -> EmailMessage | None:
    parts = _parts(raw)
    if 0 <= index < len(parts) and not parts[index].is_multipart():
        return parts[index]
    return None


_WROTE = re.compile(r"(wrote|schrieb|a écrit|escribió|ha scritto|schreef|написал\(а\)|написал)\s*:\s*$", re.I)
SIGNATURE_LINES = 15  # a "-- " line followed by at most this many lines is a signature


def _link(m: re.Match) -> str:
    return f'<a href="{m.group(0)}" rel="noopener noreferrer nofollow" target="_blank">{m.group(0)}</a>'


def text_to_html(text: str) -> Markup:
    """Plain text, escaped, with links made clickable; quoted blocks (with the "… wrote:" line before them) and
    the signature after a "-- " line folded, so that what is new shows first."""
    lines = text.splitlines()
    # Escaped and linked as a whole, then cut into lines (a link never spans lines: _URL stops at any whitespace,
    # and every line break is one): line by line it was 70 substitutions a message.
    rendered = _URL.sub(_link, html.escape(text, quote=True)).splitlines()
    quoted = [line.lstrip().startswith(">") for line in lines]
    for i, line in enumerate(lines[:-1]):  # "On Monday, Ann wrote:" belongs to the quote that follows it
        if not quoted[i] and quoted[i + 1] and _WROTE.search(line):
            quoted[i] = True
    signature = next((i for i, line in enumerate(lines) if line.rstrip() == "--"
                      and len(lines) - i - 1 <= SIGNATURE_LINES), None)
    out, block = [], []

    def flush():
        if block:
            out.append('<details class="quoted"><summary>Quoted text</summary>' + "\n".join(block) + "</details>")
            block.clear()

    for i, line in enumerate(rendered):
        if signature is not None and i == signature:
            flush()
            out.append('<details class="signature"><summary>Signature</summary>' + "\n".join(rendered[i:])
                       + "</details>")
            break
        if quoted[i]:
            block.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return Markup("\n".join(out))


def format_size(size: int | None) -> str:
    """A size as people read it: "312 bytes", "4.2 KB", "18 MB" (1 KB = 1,024 bytes)."""
    size = int(size or 0)
    if size < 1024:
        return f"{size:,} byte{'' if size == 1 else 's'}"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if size < 10 else f"{size:,.0f} {unit}"
    return ""
