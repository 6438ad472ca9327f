"""Untrusted HTML mail -> markup that runs nothing and loads nothing remote until the reader asks.

nh3 (an allow-list sanitizer) does the cleaning; the result is then only ever shown inside a sandboxed
iframe served with its own strict CSP (routes), so a sanitizer miss still cannot run script."""
import re
from collections.abc import Callable
from html.parser import HTMLParser

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "div",
    "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p",
    "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul",
}
COMMON = {"style", "align", "dir", "title", "lang", "width", "height", "valign", "bgcolor", "color", "class", "id"}
# The only classes and ids kept: what mail clients mark their quotes and signatures with, so they can be folded.
QUOTE_MARKS = {"gmail_quote", "yahoo_quoted", "moz-cite-prefix", "protonmail_quote", "zmail_extra", "quote"}
# Outlook's reply header: the quoted original is everything after it, to the end of its parent.
QUOTE_REST_MARKS = {"divRplyFwdMsg", "OutlookMessageHeader", "appendonsend"}
SIGNATURE_MARKS = {"gmail_signature", "moz-signature", "signature", "Signature"}
ATTRIBUTES = {
    "*": COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap", "scope"},
    "ol": {"start", "type"},
    "col": {"span"},
    "colgroup": {"span"},
}
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "text-transform", "letter-spacing", "white-space",
    "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
    "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top", "border-right",
    "border-bottom", "border-left", "border-color", "border-style", "border-width", "border-collapse",
    "border-spacing", "border-radius", "width", "max-width", "min-width", "height", "max-height", "min-height",
    "display", "float", "clear", "list-style-type", "table-layout", "direction",
}
_CSS_DANGER = re.compile(r"url\s*\(|expression\s*\(|image-set|@import|\\|javascript:|behavior", re.I)
_SAFE_LINK = re.compile(r"^(https?:|mailto:|#)", re.I)
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp);base64,[a-z0-9+/=\s]+$", re.I)


def sanitize(html: str, cid_url: Callable[[str], str | None], show_images: bool) -> tuple[str, bool]:
    """(clean HTML, whether remote images were held back). cid: images point at the message's own parts."""
    blocked = False

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        value = value.strip()
        if attr in ("class", "id"):
            kept = [word for word in value.split() if word in QUOTE_MARKS | QUOTE_REST_MARKS | SIGNATURE_MARKS]
            return " ".join(kept) or None
        if attr == "style":  # keep the harmless declarations, drop any that could fetch or run something
            kept = [d for d in value.split(";") if d.strip() and not _CSS_DANGER.search(d)]
            return ";".join(kept) or None
        if tag == "a" and attr == "href":
            return value if _SAFE_LINK.match(value) else None
        if tag == "img" and attr == "src":
            if value.lower().startswith("cid:"):
                return cid_url(value[4:].strip("<>"))
            if _DATA_IMAGE.match(value):
                return value
            if value.lower().startswith(("http://", "https://")):
                if show_images:
                    return value
                blocked = True
            return None
        return value

    clean = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "svg", "math", "iframe",
                            "object", "embed", "form", "textarea", "select", "button"},
        attributes=ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=STYLE_PROPERTIES,
        strip_comments=True,
    )
    return fold(clean), blocked


class _Folds(HTMLParser):
    """Where the quotes and signatures of clean HTML start and end (offsets), outermost only."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self.lines = [0]
        for line in text.splitlines(keepends=True):
            self.lines.append(self.lines[-1] + len(line))
        self.stack: list[tuple[str, str | None]] = []  # (tag, fold kind of this element or None)
        self.folds: list[tuple[int, int, str]] = []
        self.open_at: int | None = None
        self.rest_depth: int | None = None  # an Outlook header's parent: the fold ends where it does

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines[line - 1] + column

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        marks = set(" ".join(v or "" for k, v in attrs if k in ("class", "id")).split())
        kind = "quote" if tag == "blockquote" or marks & QUOTE_MARKS else "signature" if marks & SIGNATURE_MARKS \
            else None
        if marks & QUOTE_REST_MARKS and self.open_at is None:
            self.open_at, self.rest_depth = self._offset(), len(self.stack)
            self.stack.append((tag, None))
        elif kind and self.open_at is None:
            self.open_at = self._offset()
            self.stack.append((tag, kind))
        else:
            self.stack.append((tag, None))

    def handle_endtag(self, tag):
        if tag in VOID or not self.stack:
            return
        open_tag, kind = self.stack.pop()
        if self.rest_depth is not None and len(self.stack) < self.rest_depth:  # the header's parent ends here
            self.folds.append((self.open_at, self._offset(), "quote"))
            self.open_at = self.rest_depth = None
        elif kind and self.open_at is not None:
            end = self.rawdata.index(">", self._offset()) + 1
            self.folds.append((self.open_at, end, kind))
            self.open_at = None


VOID = {"br", "hr", "img", "col", "area", "base", "input", "link", "meta", "source", "track", "wbr"}
SUMMARY = {"quote": "Show quoted text", "signature": "Show signature"}


def fold(clean: str) -> str:
    """Quotes (blockquote, and the containers Gmail, Thunderbird, Outlook, Yahoo mark theirs with) and signatures
    of clean HTML inside <details>, so that what is new shows first; no script needed, in the sandbox too."""
    finder = _Folds(clean)
    finder.feed(clean)
    finder.close()
    if finder.rest_depth is not None:  # an Outlook header at the top level: the rest of the mail is the quote
        finder.folds.append((finder.open_at, len(clean), "quote"))
    folds: list[tuple[int, int, str]] = []
    for start, end, kind in finder.folds:  # "On …, Ann wrote:" and the quote after it: one fold
        if folds and folds[-1][2] == kind == "quote" and not clean[folds[-1][1]:start].strip():
            folds[-1] = (folds[-1][0], end, kind)
        else:
            folds.append((start, end, kind))
    out, at = [], 0
    for start, end, kind in folds:
        out += [clean[at:start], f'<details class="folded {kind}"><summary>{SUMMARY[kind]}</summary>',
                clean[start:end], "</details>"]
        at = end
    out.append(clean[at:])
    return "".join(out)
