"""An archived message as a reader sees it: its text or HTML body, attachments and inline images.

Re-parsed from the raw bytes (the source of truth) within the same limits as at ingest."""
import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from email.message import Message as EmailMessage

from markupsafe import Markup

from webapp.archive.parse import MAX_PARTS, _decoded, _filename

filename_of = _filename  # a part's filename, decoded and cleaned of control characters

_URL = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]", re.I)
RISKY_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml")
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f]")


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
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        return []
    return [part for _, part in zip(range(MAX_PARTS), msg.walk())]


def load(raw: bytes, parse_problem: str | None) -> Display:
    """Bodies and attachments; a message over the limits is shown as its raw text only."""
    if parse_problem:
        return Display(text=raw[:200_000].decode("utf-8", "replace"))
    display = Display()
    for index, part in enumerate(_parts(raw)):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        cid = (part.get("Content-ID") or "").strip().strip("<>")
        name = _filename(part)
        if cid:
            display.cids[cid] = index
        if ctype == "text/plain" and not name and disposition != "attachment" and display.text is None:
            display.text = _decoded(part)
        elif ctype == "text/html" and not name and disposition != "attachment" and display.html is None:
            display.html = _decoded(part)
        elif not (cid and disposition != "attachment"):
            payload = part.get_payload(decode=True) or b""
            display.attachments.append(Attachment(index, safe_filename(name, ctype), ctype, len(payload)))
    return display


def part(raw: bytes, index: int) -> EmailMessage | None:
    parts = _parts(raw)
    if 0 <= index < len(parts) and not parts[index].is_multipart():
        return parts[index]
    return None


def safe_filename(name: str, content_type: str) -> str:
    """No line breaks, path parts or bidi overrides (which disguise 'exe.pdf' as 'fdp.exe')."""
    name = _BIDI.sub("", name or "")
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).replace("\\", "/").split("/")[-1].strip(" .")
    return name[:200] or ("attachment" + {"text/plain": ".txt", "text/html": ".html"}.get(content_type, ""))


def text_to_html(text: str) -> Markup:
    """Plain text, escaped, with links made clickable and quoted blocks folded."""
    out, quoted = [], []

    def flush():
        if quoted:
            out.append("<details class=\"quoted\"><summary>Quoted text</summary>" + "\n".join(quoted) + "</details>")
            quoted.clear()

    for line in text.splitlines():
        rendered = _URL.sub(lambda m: f'<a href="{m.group(0)}" rel="noopener noreferrer nofollow" target="_blank">'
                                      f'{m.group(0)}</a>', html.escape(line, quote=True))
        if line.lstrip().startswith(">"):
            quoted.append(rendered)
        else:
            flush()
            out.append(rendered)
    flush()
    return Markup("\n".join(out))
