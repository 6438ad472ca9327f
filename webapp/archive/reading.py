"""What readers browse: keyset-paged message and thread lists with filters, thread trees, exports."""
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, select, text, tuple_

from webapp.archive import query as operators
from webapp.archive import search
from webapp.archive.models import Message, MessageRaw, Thread, ThreadVisit
from webapp.extensions import db
from webapp.params import MAX_ID
from webapp.timeutil import utcnow

PAGE = 50
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass
class Filters:
    q: str = ""
    sender: str = ""
    month: str = ""
    attachments: bool = False
    order: str = "newest"

    @property
    def active(self) -> bool:
        return bool(self.q or self.sender or self.month or self.attachments)


def month_bounds(month: str) -> tuple[datetime, datetime] | None:
    m = _MONTH.match(month or "")
    if not m or not 1 <= int(m.group(2)) <= 12 or not 1 <= int(m.group(1)) <= 9998:
        return None
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=timezone.utc)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def encode_cursor(date: datetime, item_id: int) -> str:
    return f"{date.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{item_id}"


def decode_cursor(value: str | None) -> tuple[datetime, int] | None:
    try:
        stamp, item_id = (value or "").split("-")
        found = datetime.strptime(stamp, "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc), int(item_id)
    except ValueError:
        return None
    return found if 0 <= found[1] <= MAX_ID else None


def _message_filters(query, space_id: int, filters: Filters):
    """The live archive of a space, narrowed by the filters beside the box (as conditions, like the search's)."""
    query = query.where(Message.space_id == space_id, Message.deleted_at.is_(None))
    return _where(query, _conditions(filters, operators.Query(), "archive_messages"))


def _where(query, conditions):
    where, params = conditions(db.session.get_bind().dialect.name, lambda name: f":{name}")
    return query.where(text(" AND ".join(where)).bindparams(**params)) if where else query


def _conditions(filters: Filters, parsed: operators.Query, table: str = "m"):
    """The Mail tab's filters and the box's operators as conditions for search() (or, with the table's own
    name, for the plain list): applied in the statement, never to a first batch of hits afterwards."""
    def build(dialect, param):
        where, params = operators.conditions(parsed, dialect, param, table)
        if filters.sender:
            params["ui_sender"] = operators.like_pattern(filters.sender.casefold())
            where.append(f"{table}.sender_key LIKE {param('ui_sender')} ESCAPE '\\'")
        bounds = month_bounds(filters.month)
        if bounds:
            stamps = [b.replace(tzinfo=None).isoformat(sep=" ") if dialect == "sqlite" else b for b in bounds]
            params["ui_from"], params["ui_to"] = stamps
            where.append(f"{table}.date >= {param('ui_from')} AND {table}.date < {param('ui_to')}")
        if filters.attachments:
            where.append(f"{table}.has_attachments")
        if parsed.exclude and not parsed.searches_text:  # -words alone: FTS5 matches no NOT by itself
            params["ui_exclude"] = search.exclusions(parsed, dialect)
            where.append(f"{table}.id NOT IN (SELECT rowid & {search.ID_MASK} FROM search_messages WHERE search_messages MATCH "
                         f"{param('ui_exclude')})" if dialect == "sqlite" else
                         f"NOT ({table}.search_vector @@ CAST({param('ui_exclude')} AS tsquery))")
        return where, params
    return build


def _listed():
    """A Mail tab row: its columns and its thread's size, as plain rows in one query (a page of ORM objects
    cost a fifth of the request)."""
    return (select(Message.id, Message.subject, Message.from_name, Message.from_addr, Message.date,
                   Message.has_attachments, Message.thread_id, Thread.message_count.label("thread_size"))
            .outerjoin(Thread, Thread.id == Message.thread_id))


def messages(space_id: int, filters: Filters, before=None, zone=timezone.utc) -> tuple[list, dict, str | None]:
    """(messages, snippets by id, next cursor). The box's words and operators and the filters beside it narrow
    the list in one statement, so every page is full while there are matches."""
    parsed = operators.parse(filters.q, zone)
    snippets = {}
    if parsed.searches_text:
        relevance = filters.order == "relevance"
        hits = search.search(space_id, parsed, order=filters.order, limit=PAGE + 1,
                             before=None if relevance else before, extra=_conditions(filters, parsed))
        more = not relevance and len(hits) > PAGE
        hits = hits[:PAGE]
        snippets = {h.message_id: h.snippet for h in hits}
        found = {m.id: m for m in db.session.execute(_listed().where(Message.id.in_(list(snippets))))}
        rows = [found[i] for i in snippets if i in found]
    else:
        query = _where(_listed().where(Message.space_id == space_id, Message.deleted_at.is_(None)),
                       _conditions(filters, parsed, "archive_messages"))
        if before:
            query = query.where(tuple_(Message.date, Message.id) < tuple_(*before))
        rows = list(db.session.execute(query.order_by(Message.date.desc(), Message.id.desc()).limit(PAGE + 1)))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
    cursor = encode_cursor(rows[-1].date, rows[-1].id) if more and rows else None
    return rows, snippets, cursor


def newer_cursor(space_id: int, filters: Filters, view: str, first) -> str | None:
    """The `before` cursor of the page just newer than one starting at `first` ((date, id)): "" for the first page,
    None when there is nothing newer. Search pages go back to the newest instead (""): a search walks one way."""
    if first is None:
        return None
    if filters.q:
        return ""
    if view == "threads":
        query = select(Thread.last_date, Thread.id).where(Thread.space_id == space_id, Thread.message_count > 0)
        if filters.sender or filters.month or filters.attachments:
            query = query.where(Thread.id.in_(_message_filters(select(Message.thread_id), space_id, filters)))
        key = tuple_(Thread.last_date, Thread.id)
        order = (Thread.last_date.asc(), Thread.id.asc())
    else:
        query = _message_filters(select(Message.date, Message.id), space_id, filters)
        key = tuple_(Message.date, Message.id)
        order = (Message.date.asc(), Message.id.asc())
    rows = list(db.session.execute(query.where(key > tuple_(*first)).order_by(*order).limit(PAGE + 1)))
    if not rows:
        return None
    if len(rows) <= PAGE:
        return ""
    top = rows[PAGE - 1]  # the newer page starts here: everything up to and including it, newest first
    return encode_cursor(top[0], top[1] + 1)


def threads(space_id: int, filters: Filters, before=None) -> tuple[list[Thread], str | None]:
    """Threads newest activity first; filters pick threads holding a matching message."""
    query = select(Thread).where(Thread.space_id == space_id, Thread.message_count > 0)
    if filters.sender or filters.month or filters.attachments:
        matching = _message_filters(select(Message.thread_id), space_id, filters)
        query = query.where(Thread.id.in_(matching))
    if before:
        query = query.where(tuple_(Thread.last_date, Thread.id) < tuple_(*before))
    rows = list(db.session.scalars(query.order_by(Thread.last_date.desc(), Thread.id.desc()).limit(PAGE + 1)))
    cursor = encode_cursor(rows[PAGE - 1].last_date, rows[PAGE - 1].id) if len(rows) > PAGE else None
    return rows[:PAGE], cursor


def adjacent_threads(thread: Thread) -> tuple:
    """(the next newer thread, the next older one) as (id, subject) rows, in the Mail tab's thread order: newest
    activity first."""
    key = tuple_(Thread.last_date, Thread.id)
    here = tuple_(thread.last_date, thread.id)
    base = select(Thread.id, Thread.subject).where(Thread.space_id == thread.space_id, Thread.message_count > 0)
    newer = db.session.execute(base.where(key > here).order_by(Thread.last_date.asc(), Thread.id.asc())
                               .limit(1)).first()
    older = db.session.execute(base.where(key < here).order_by(Thread.last_date.desc(), Thread.id.desc())
                               .limit(1)).first()
    return newer, older


def thread_tree(thread: Thread) -> list[tuple[Message, int]]:
    """The thread's messages in reply order, each with its depth (replies under their parents, by date)."""
    rows = list(db.session.scalars(select(Message).where(Message.thread_id == thread.id, Message.deleted_at.is_(None))
                                   .order_by(Message.date, Message.id)))
    ids = {m.id for m in rows}
    children: dict[int | None, list[Message]] = {}
    for m in rows:
        children.setdefault(m.parent_id if m.parent_id in ids else None, []).append(m)
    ordered, stack, seen = [], [(m, 0) for m in reversed(children.get(None, []))], set()
    while stack:
        node, depth = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        ordered.append((node, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(node.id, [])))
    ordered += [(m, 0) for m in rows if m.id not in seen]  # a loop that slipped through still shows
    return ordered


def mbox_stream(message_query):
    """An mbox (mboxrd) built message by message: never the whole archive in memory."""
    query = message_query.with_only_columns(Message.id, Message.from_addr, Message.date).order_by(Message.date,
                                                                                                  Message.id)
    for message_id, sender, date in db.session.execute(query.execution_options(yield_per=200)):
        raw = db.session.scalar(select(MessageRaw.raw).where(MessageRaw.message_id == message_id)) or b""
        yield from mbox_entry(raw, sender, date)


NO_FINAL_NEWLINE = b" remote from spacemail.no-final-newline"  # UUCP's From_ suffix, which mbox readers allow


def mbox_entry(raw: bytes, sender: str | None, date) -> list[bytes]:
    """One message in mboxrd, its bytes exactly as archived (line ends included, so an import gives back the
    same bytes): '>' added to every '>*From ' line, a blank line after; a message without a final line break
    says so on its From_ line, so the importer takes the added one off again."""
    stamp = (date.strftime("%a %b %d %H:%M:%S %Y") if date else "Thu Jan  1 00:00:00 1970").encode()
    sender_word = (sender or "MAILER-DAEMON").replace(" ", "_").encode("utf-8", "replace")
    ends = raw.endswith(b"\n")
    return [b"From " + sender_word + b" " + stamp + (b"" if ends else NO_FINAL_NEWLINE) + b"\n",
            re.sub(rb"(?m)^(>*From )", rb">\1", raw), b"" if ends else b"\n", b"\n"]


def export_query(space_id: int, thread_id: int | None = None, month: str = ""):
    query = select(Message).where(Message.space_id == space_id, Message.deleted_at.is_(None))
    if thread_id is not None:
        query = query.where(Message.thread_id == thread_id)
    bounds = month_bounds(month)
    if bounds:
        query = query.where(and_(Message.date >= bounds[0], Message.date < bounds[1]))
    return query


LONG_THREAD = 5  # threads longer than this fold what the reader has seen
VISIT_GAP = timedelta(minutes=1)


def last_visit(user_id: int, thread: Thread):
    """When `user_id` last opened `thread` (None the first time), and now noted as this visit; a visit within the
    last minute is the same visit (a reload writes nothing). The caller commits when the session is dirty."""
    visit = db.session.scalar(select(ThreadVisit).where(ThreadVisit.user_id == user_id,
                                                        ThreadVisit.thread_id == thread.id))
    now = utcnow()
    if visit is None:
        db.session.add(ThreadVisit(user_id=user_id, thread_id=thread.id, seen_at=now))
        return None
    previous = visit.seen_at
    if previous < now - VISIT_GAP:
        visit.seen_at = now
    return previous
