"""Search operators in the Mail tab's box: from:, to:, subject:, has:attachment, filename:, before:, after:,
in:thread and -word, parsed once into full-text terms (searched by the index) and conditions on the message row
(applied in the same statement, so a page is always full when there are enough matches).

    budget from:ann -draft subject:"q3 plan" has:attachment after:2026-01-01 before:2026-02-01

A word the box does not know as an operator ("http:", "re:", "10:30") is searched as written.
"""
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone

from webapp.archive.search import TextQuery, parse_query

_PIECE = re.compile(r'(-?)(?:(from|to|subject|has|filename|before|after|in):)?("[^"]*"|\S+)', re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
OPERATORS = ("from", "to", "subject", "has", "filename", "before", "after", "in")


@dataclass
class Query(TextQuery):
    """TextQuery's terms (anywhere, subject:, from: in the sender's name and address, -words), and the rest."""

    to: list[str] = field(default_factory=list)  # in To or Cc, as written
    filenames: list[str] = field(default_factory=list)
    has_attachment: bool = False
    in_thread: bool = False
    after: datetime | None = None  # UTC, this instant and later
    before: datetime | None = None  # UTC, earlier than this instant
    problems: list[str] = field(default_factory=list)  # what the reader typed that could not be used, said why

    @property
    def searches_text(self) -> bool:
        return bool(self.terms or self.subject or self.sender)

    @property
    def empty(self) -> bool:
        return not (self.searches_text or self.exclude or self.to or self.filenames or self.has_attachment
                    or self.in_thread or self.after or self.before)


def _day(text: str, zone) -> datetime | None:
    """2026-11-30, 2026-11 or 2026 as the start of that day (month, year) in the reader's zone, in UTC."""
    match = _DATE.match(text)
    if not match:
        return None
    try:
        start = date(int(match.group(1)), int(match.group(2) or 1), int(match.group(3) or 1))
    except ValueError:
        return None
    return datetime.combine(start, time(), zone).astimezone(timezone.utc)


def parse(text: str, zone=timezone.utc) -> Query:
    """The box's text as a Query; operators are case-insensitive, a quoted value is a phrase. As in Gmail,
    after:2026-11-30 is that day and later, before:2026-12-01 is earlier than that day."""
    query = Query()
    for minus, operator, value in _PIECE.findall(text or ""):
        op, bare = operator.lower(), value.strip('"')
        if op and minus:
            query.problems.append(f"-{op}: cannot exclude; write -word to leave out mail holding a word.")
        elif op in ("from", "subject"):
            (query.sender if op == "from" else query.subject).extend(parse_query(value))
        elif op == "to" and bare:
            query.to.append(bare.casefold()[:200])
        elif op == "filename" and bare:
            query.filenames.append(bare.casefold()[:200])
        elif op == "has":
            if bare.lower() in ("attachment", "attachments", "file"):
                query.has_attachment = True
            else:
                query.problems.append(f"has:{bare} is not known; has:attachment is.")
        elif op == "in":
            if bare.lower() == "thread":
                query.in_thread = True
            else:
                query.problems.append(f"in:{bare} is not known; in:thread is.")
        elif op in ("before", "after"):
            when = _day(bare, zone)
            if when is None:
                query.problems.append(f"{op}: wants a date such as 2026-11-30, 2026-11 or 2026.")
            else:
                setattr(query, op, when)
        elif minus:
            query.exclude.extend(parse_query(value))
        else:
            query.terms.extend(parse_query(value))
    return query


def like_pattern(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def conditions(query: Query, dialect: str, param, table: str = "m") -> tuple[list[str], dict]:
    """SQL conditions on the message row for everything but full-text terms, and their parameters. `param(name)`
    writes a placeholder in the caller's style (":name" or "%(name)s"); `table` is the messages' alias."""
    where, params = [], {}

    def bind(name, value):
        params[name] = value
        return param(name)

    def stamp(value: datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ") if dialect == "sqlite" else value

    for i, value in enumerate(query.to):
        where.append(f"(lower({table}.to_addrs) LIKE {bind(f'to{i}', like_pattern(value))} ESCAPE '\\' "
                     f"OR lower({table}.cc_addrs) LIKE {param(f'to{i}')} ESCAPE '\\')")
    for i, value in enumerate(query.filenames):
        # Names are stored in the attachments' JSON, non-ASCII letters escaped as JSON writes them.
        needle = json.dumps(value)[1:-1]
        column = f"{table}.attachments" if dialect == "sqlite" else f"CAST({table}.attachments AS TEXT)"
        where.append(f"{table}.has_attachments AND lower({column}) LIKE {bind(f'file{i}', like_pattern(needle))} "
                     "ESCAPE '\\'")
    if query.has_attachment:
        where.append(f"{table}.has_attachments")
    if query.after is not None:
        where.append(f"{table}.date >= {bind('after', stamp(query.after))}")
    if query.before is not None:
        where.append(f"{table}.date < {bind('before', stamp(query.before))}")
    if query.in_thread:
        where.append(f"EXISTS (SELECT 1 FROM archive_threads t WHERE t.id = {table}.thread_id "
                     "AND t.message_count > 1)")
    return where, params
