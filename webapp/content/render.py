"""Markdown to safe HTML, and diffs between versions."""
import difflib
from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre", "blockquote", "ul",
         "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "del", "img"}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"}, "td": {"align"},
               "ol": {"start"}, "code": {"class"}}


def markdown(text: str) -> str:
    """Markdown rendered, then sanitized: raw HTML is never passed through, links get rel=noopener."""
    return nh3.clean(_md.render(text or ""), tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer nofollow")


@dataclass
class DiffLine:
    kind: str  # "add", "del", "same", "gap"
    text: str


def diff(old: str, new: str, context: int = 3) -> list[DiffLine]:
    """Line diff of two Markdown texts with `context` lines around each change."""
    lines = []
    for group in difflib.SequenceMatcher(None, old.splitlines(), new.splitlines()).get_grouped_opcodes(context):
        if lines:
            lines.append(DiffLine("gap", "…"))
        for tag, i1, i2, j1, j2 in group:
            a, b = old.splitlines()[i1:i2], new.splitlines()[j1:j2]
            if tag == "equal":
                lines += [DiffLine("same", t) for t in a]
            else:
                lines += [DiffLine("del", t) for t in a] + [DiffLine("add", t) for t in b]
    return lines


def diff_excerpt(old: str, new: str, limit: int = 20) -> list[DiffLine]:
    """The first `limit` lines of the diff, for a notification."""
    lines = diff(old, new, context=1)
    return lines[:limit] + ([DiffLine("gap", f"… {len(lines) - limit} more lines")] if len(lines) > limit else [])
