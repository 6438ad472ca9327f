"""Raw bytes -> a stored message: dedupe, parse within limits, thread. Never raises on bad mail."""
import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import re
import signal
import sqlite3
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import psycopg
from flask import current_app
from sqlalchemy import ARRAY, any_, bindparam, case, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from webapp.archive import search
from webapp.archive.models import Message, MessageRaw, MessageRef, Thread
from webapp.archive.parse import Parsed, parse
from webapp.extensions import db
from webapp.timeutil import utcnow

BLOB_CHUNK = 1024 * 1024
# "Re:" and the words mail clients use for it in other languages (AW, SV, VS, Antw, Odp, RES, RIF, Ynt, 回复 …),
# with an optional count ("Re[2]:"), and list tags ("[team]"). Forwards ("Fwd:", "FW:", "WG:") are not replies.
_REPLY = r"(re|aw|sv|vs|antw|antwort|odp|res|rif|ref|ynt|atb|vá|ats|rv|απ|отв|回复|回覆|答复|返信)"
_REPLY_PREFIX = re.compile(rf"^\s*({_REPLY}\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*|\[[^\]]{{1,40}}\]\s*)+", re.I)
_LIST_TAG = re.compile(r"^\s*(\[[^\]]{1,40}\]\s*)+")
_REPLY_START = re.compile(rf"^\s*{_REPLY}\s*(\[\d+\]|\(\d+\))?\s*[:：]", re.I)


def subject_key(subject: str) -> str:
    """'Re: [team] AW: Lunch' -> 'lunch': how replies without headers find their thread. A forward keeps its
    'Fwd:', so it is not taken for a reply in the thread it forwards from."""
    return _REPLY_PREFIX.sub("", subject or "").strip().lower()[:200]


def sender_key(name: str, address: str) -> str:
    """What the sender filter matches: name and address case-folded in every script ("Øster", "Иванов")."""
    return f"{name or ''} {address or ''}".casefold()


def threading_refs(parsed: Parsed) -> list[str]:
    """The references that may join threads: real Message-IDs only ("<yes>", "<1>" and other junk some clients
    write would glue unrelated mail together), never the message's own."""
    own = parsed.message_id
    return [ref for ref in parsed.references if "@" in ref and ref != own]


_LINE_END = re.compile(rb"\r\n|\r|\n")


def canonical(raw: bytes) -> bytes:
    """A message however it travelled: CRLF line ends and one final line break. POP3 cannot carry a missing final
    newline and adds one, an mbox stores LF: the same message fetched or imported either way is the same."""
    if raw.count(b"\r") != raw.count(b"\r\n") or raw.count(b"\n") != raw.count(b"\r\n"):
        raw = _LINE_END.sub(b"\r\n", raw)
    if raw.endswith(b"\r\n") and not raw.endswith(b"\r\n\r\n"):
        return raw
    return raw.rstrip(b"\r\n") + b"\r\n"


def dedupe_key(raw: bytes) -> str:
    """The sha256 of the canonical form: the archive's dedupe key (the raw bytes are kept as they came)."""
    return hashlib.sha256(canonical(raw)).hexdigest()


def existing(space_id: int, sha256: str) -> int | None:
    return db.session.scalar(select(Message.id).where(Message.space_id == space_id, Message.sha256 == sha256))


def store(space_id: int, account_id: int | None, raw: bytes) -> tuple[int, bool]:
    """Archive `raw` in the space unless it is there already: (message id, created). The caller commits."""
    return store_batch(space_id, account_id, [raw])[0]


@dataclass
class Prepared:
    """A batch made ready for store_batch away from the database: each message's dedupe key, and each distinct
    message parsed (with its PostgreSQL search vector when `vectors`)."""

    shas: list[str]
    parsed: dict[str, Parsed]


def prepare(raws: list[bytes], size_cap: int, vectors: bool) -> Prepared:
    """Pure work (no database, no app context), so that it can run in another thread: see ahead()."""
    shas = [dedupe_key(raw) for raw in raws]
    parsed = {}
    for sha, raw in zip(shas, raws):
        if sha not in parsed:
            parsed[sha] = parse(raw, size_cap, sha)
            if vectors:
                p = parsed[sha]
                p.search_vector = search.pg_vector(p.subject, f"{p.from_name} {p.from_addr}", p.text)
    return Prepared(shas, parsed)


def parser(in_process: bool) -> Executor:
    """Where batches are parsed ahead of the store (ingest.prepare): a process of its own for a long fetch or an
    import, so that the parse runs on the second core instead of taking turns at the GIL with the store; a thread for
    a short fetch (starting a process costs more than it saves there, and a lone large message is not copied into
    a second process). The process is forked from the worker: it starts with everything imported, and it touches
    no database connection (prepare is pure) and leaves without closing any."""
    if in_process:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=_parser_started,
                                   initargs=(os.getpid(),))
    return ThreadPoolExecutor(1, thread_name_prefix="parse-ahead")


PR_SET_PDEATHSIG = 1


def _parser_started(worker: int) -> None:
    """In the parser process: it dies with its worker, killed or not (it holds copies of the worker's pipes, and a
    killed worker's parser would otherwise wait for work for ever)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker:  # the worker died before the line above took effect
        os._exit(0)


def ahead(batches):
    """(batch, Prepared) for each batch of raw messages, the next batch prepared in another process while the
    caller stores this one (docs/benchmarks.md, B3 and B8). At most two batches are held at a time."""
    size_cap, vectors = current_app.config["ARCHIVE_PARSE_LIMIT"], _vectors()
    with parser(True) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(prepare, batch, size_cap, vectors)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def _vectors() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def store_batch(space_id: int, account_id: int | None, raws: list[bytes],
                prepared: Prepared | None = None) -> list[tuple[int, bool]]:
    """Archive each of `raws` not already in the space: (message id, created) for each, in order.

    One statement per table for the whole batch (the rows of a fetch batch are committed together anyway):
    a message at a time cost ~11 statements and a savepoint each. Parsing happens before the write lock is
    taken (or beforehand, in another thread: `prepared`), so other writers wait only for the inserts. The caller
    commits."""
    shas = prepared.shas if prepared is not None else [dedupe_key(raw) for raw in raws]
    _planner_statistics()
    known = _existing_many(space_id, set(shas))
    fresh = _first_copies(shas, known)
    if fresh:  # nothing new (a re-download): no parsing, no write lock
        if prepared is not None:
            parsed = prepared.parsed
        else:
            limit = current_app.config["ARCHIVE_PARSE_LIMIT"]
            parsed = {sha: parse(raws[i], limit, sha) for sha, i in fresh.items()}
        write_lock()
        known.update(_existing_many(space_id, set(fresh)))  # again, under the lock: another fetch may have won
        fresh = {sha: i for sha, i in fresh.items() if sha not in known}
    if fresh:
        try:
            with _race_guard():
                ids = _write(space_id, account_id, [parsed[sha] for sha in fresh], [raws[i] for i in fresh.values()])
            known.update(zip(fresh, ids))
        except IntegrityError:
            if len(raws) == 1:
                return [(existing(space_id, shas[0]), False)]
            return [store(space_id, account_id, raw) for raw in raws]  # one at a time finds who won
    created = set(fresh.values())
    return [(known[sha], i in created) for i, sha in enumerate(shas)]


_ANALYZED: set[str] = set()  # databases (URLs) whose archive tables were seen analyzed, in this process
STATISTICS_AT = 2_000


def _planner_statistics() -> None:
    """PostgreSQL plans a batch's lookups (500 keys a statement) from table statistics. Tables never analyzed
    (autovacuum off, as on the machines here, or not run yet) get "one space holds 4 rows", and each lookup
    scanned the whole space: a fetch grew quadratic. Analyze them once, when the archive first holds a few
    thousand messages; after that autovacuum keeps them (`flask doctor` says when it is off)."""
    bind = db.session.get_bind()
    if bind.dialect.name != "postgresql" or str(bind.url) in _ANALYZED:
        return
    reltuples, live = db.session.execute(text(
        "SELECT c.reltuples, coalesce(s.n_live_tup, 0) FROM pg_class c LEFT JOIN pg_stat_user_tables s "
        "ON s.relid = c.oid WHERE c.oid = 'archive_messages'::regclass")).one()
    if reltuples >= STATISTICS_AT:
        _ANALYZED.add(str(bind.url))
    elif live >= STATISTICS_AT:
        try:  # on a connection of its own, outside the batch's transaction: no lock held past the statement
            with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE archive_messages, archive_refs, archive_threads"))
            _ANALYZED.add(str(bind.url))
        except Exception:  # noqa: BLE001 - statistics are an optimization; the next batch tries again
            pass


def _race_guard():
    """A savepoint on PostgreSQL, where a concurrent fetch can insert the same bytes first (IntegrityError);
    on SQLite the write lock already rules that out, and a savepoint would only cost its RELEASE."""
    if db.session.get_bind().dialect.name == "sqlite":
        return contextlib.nullcontext()
    return db.session.begin_nested()


def write_lock() -> None:
    """On SQLite, open the transaction with the database's write lock (BEGIN IMMEDIATE).

    Then a check made after it holds until the commit, and the SAVEPOINT above nests in a real transaction:
    Python's sqlite3 opens none before a SAVEPOINT, so its RELEASE committed (an fsync per batch) on its own."""
    if db.session.get_bind().dialect.name != "sqlite":
        return
    connection = db.session.connection().connection.driver_connection
    if not connection.in_transaction:
        connection.execute("BEGIN IMMEDIATE")


def _first_copies(shas: list[str], known: dict[str, int]) -> dict[str, int]:
    """sha -> index of its first copy in the batch, for those not in the archive."""
    fresh: dict[str, int] = {}
    for i, sha in enumerate(shas):
        if sha not in known and sha not in fresh:
            fresh[sha] = i
    return fresh


def _among(column, values: list):
    """`column IN values`: on PostgreSQL one array parameter (`= ANY`), since an IN list of 500 parameters is a
    new statement for psycopg to convert each time (most of a batch's lookups, docs/benchmarks.md, B8)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def _existing_many(space_id: int, shas: set[str]) -> dict[str, int]:
    found, shas = {}, list(shas)
    for start in range(0, len(shas), 500):
        found.update(db.session.execute(select(Message.sha256, Message.id).where(
            Message.space_id == space_id, _among(Message.sha256, shas[start:start + 500]))).all())
    return found


class _NewThread:
    """A thread this batch starts; its row is written before the batch's messages. One that a later message of the
    batch shows to be part of another thread points there (`into`: another _NewThread, or a stored thread id)."""

    def __init__(self, subject: str, date: datetime) -> None:
        self.subject, self.key, self.count, self.last_date, self.id = subject, subject_key(subject), 0, date, None
        self.into = None

    def resolve(self):
        thread = self
        while isinstance(thread, _NewThread) and thread.into is not None:
            thread = thread.into
        return thread


def _resolved(thread):
    return thread.resolve() if isinstance(thread, _NewThread) else thread


def _write(space_id: int, account_id: int | None, parsed: list[Parsed], raws: list[bytes]) -> list[int]:
    rows = [_message_row(space_id, account_id, p) for p in parsed]
    threads, parents, merges = _place(space_id, parsed, rows)
    threads = [_resolved(t) for t in threads]
    new_threads = list({id(t): t for t in threads if isinstance(t, _NewThread)}.values())
    for thread in new_threads:
        thread.count = 0
    for thread, row in zip(threads, rows):  # each new thread's size and newest date, in one pass over the batch
        if isinstance(thread, _NewThread):
            thread.last_date = row["date"] if thread.count == 0 else max(thread.last_date, row["date"])
            thread.count += 1
    if new_threads:
        thread_ids = _insert_rows(Thread.__table__, [
            {"space_id": space_id, "subject": t.subject, "subject_key": t.key, "message_count": t.count,
             "last_date": t.last_date} for t in new_threads])
        for thread, thread_id in zip(new_threads, thread_ids):
            thread.id = thread_id
    for row, thread, parent in zip(rows, threads, parents):
        row["thread_id"] = thread.id if isinstance(thread, _NewThread) else thread
        row["parent_id"] = parent if isinstance(parent, int) else None
    ids = _insert_messages(rows)
    later = [{"m_id": ids[i], "p_id": ids[p[0]]} for i, p in enumerate(parents) if isinstance(p, tuple)]
    if later:  # parents stored in this same batch
        table = Message.__table__
        db.session.execute(update(table).where(table.c.id == bindparam("m_id")).values(parent_id=bindparam("p_id")),
                           later)
    _touch_existing([(t, row["date"]) for t, row in zip(threads, rows) if isinstance(t, int)])
    moved: dict[int, int] = {}
    for old, into in merges:  # stored threads a message of this batch showed to be one conversation
        target = _resolved(into)
        target = target.id if isinstance(target, _NewThread) else target
        while old in moved:
            old = moved[old]
        while target in moved:
            target = moved[target]
        if old != target:
            _merge(old, target)
            moved[old] = target
    for row in rows:
        while row["thread_id"] in moved:
            row["thread_id"] = moved[row["thread_id"]]
    _write_raws(ids, raws)
    refs = [{"space_id": space_id, "message_id": i, "ref": ref[:300]} for i, p in zip(ids, parsed)
            for ref in p.references]
    if refs:
        db.session.execute(insert(MessageRef.__table__), refs)
    search.index_rows([dict(row, id=i) for row, i in zip(rows, ids)])
    _adopt_children(space_id, ids, rows)
    return ids


def _insert_messages(rows: list[dict]) -> list[int]:
    """Insert the batch's message rows; their ids, in order.

    The ids are taken first (PostgreSQL: from the sequence; SQLite: after the highest, under the write lock the
    batch holds, as SQLite itself would number them), then the rows go in as one executemany of one short statement
    on the driver, each (PostgreSQL) with its search vector (search.pg_vector). SQLAlchemy's multi-row INSERT ...
    RETURNING for 500 rows was a new 10,000-parameter statement each batch, which psycopg converted in Python every
    time (a fifth of the import's time, docs/benchmarks.md, B8), and on SQLite, where RETURNING does not promise the
    rows' order, one statement a row (B1)."""
    vectors = db.session.get_bind().dialect.name == "postgresql"
    return _insert_rows(Message.__table__, rows, {"search_vector": lambda row: row.get("search_vector")
                                                  or search.row_vector(row)} if vectors else None)


def _insert_rows(table, rows: list[dict], tsvectors: dict | None = None) -> list[int]:
    """Insert rows (dicts of the table's columns but its id) through the driver in one executemany; their ids, in
    order. `tsvectors`: PostgreSQL tsvector columns beyond the model's (the search vector), each a function of the
    row."""
    tsvectors = tsvectors or {}
    connection = db.session.connection()
    dialect = connection.dialect
    raw = connection.connection.driver_connection
    if dialect.name == "sqlite":
        write_lock()
        start = raw.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table.name}").fetchone()[0]
        ids = list(range(start, start + len(rows)))
    else:
        ids = sorted(row[0] for row in raw.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) FROM generate_series(1, %s)", [len(rows)]))
    columns = [c for c in table.c if c.name != "id"]
    processors = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns}
    params = []
    for row_id, row in zip(ids, rows):
        values = {"id": row_id}
        for column in columns:
            value = row.get(column.name)
            process = processors[column.name]
            values[column.name] = process(value) if process and value is not None else value
        for name, make in tsvectors.items():
            values[name] = make(row)
        params.append(values)
    names = ["id", *(c.name for c in columns)]
    if dialect.name == "sqlite":
        statement = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ("
                     + ", ".join(f":{name}" for name in names) + ")")
        try:
            raw.executemany(statement, params)
        except sqlite3.IntegrityError as error:
            raise IntegrityError(statement, None, error) from error
        return ids
    statement = (f"INSERT INTO {table.name} ({', '.join([*names, *tsvectors])}) VALUES ("
                 + ", ".join([*(f"%({name})s" for name in names), *(f"%({name})s::tsvector" for name in tsvectors)])
                 + ")")
    with raw.cursor() as cursor:
        try:
            cursor.executemany(statement, params)
        except psycopg.IntegrityError as error:  # as SQLAlchemy would say it: a concurrent fetch won (store_batch)
            raise IntegrityError(statement, None, error) from error
    return ids


def _write_raws(ids: list[int], raws: list[bytes]) -> None:
    """The raw bytes; on SQLite a large message is streamed into its row in chunks (incremental blob I/O),
    because binding it whole makes SQLite copy it twice more: a 50 MB message peaked at 4.7x its size."""
    sqlite = db.session.get_bind().dialect.name == "sqlite"
    small = [{"message_id": i, "raw": raw} for i, raw in zip(ids, raws) if not (sqlite and len(raw) > BLOB_CHUNK)]
    if small and sqlite:  # straight to the driver: SQLAlchemy's binary type copies each message once more
        db.session.connection().connection.driver_connection.executemany(
            "INSERT INTO archive_raw (message_id, raw) VALUES (:message_id, :raw)", small)
    elif small:
        db.session.execute(insert(MessageRaw.__table__), small)
    for message_id, raw in zip(ids, raws):
        if sqlite and len(raw) > BLOB_CHUNK:
            db.session.execute(text("INSERT INTO archive_raw (message_id, raw) VALUES (:id, zeroblob(:size))"),
                               {"id": message_id, "size": len(raw)})
            connection = db.session.connection().connection.driver_connection
            with connection.blobopen("archive_raw", "raw", message_id) as blob:
                view = memoryview(raw)
                for start in range(0, len(raw), BLOB_CHUNK):
                    blob.write(view[start:start + BLOB_CHUNK])


def _message_row(space_id: int, account_id: int | None, parsed: Parsed) -> dict:
    now = utcnow()
    row = dict(
        space_id=space_id, account_id=account_id, sha256=parsed.sha256, size=parsed.size,
        message_id_header=(parsed.message_id or "")[:300] or None, in_reply_to=parsed.in_reply_to,
        subject=parsed.subject, from_name=parsed.from_name, from_addr=parsed.from_addr,
        sender_key=sender_key(parsed.from_name, parsed.from_addr),
        to_addrs=parsed.to_addrs, cc_addrs=parsed.cc_addrs, date=parsed.date or now,
        has_attachments=bool(parsed.attachments), attachments=parsed.attachments, body_text=parsed.text,
        parse_problem=parsed.problem, received_at=now, deleted_at=None, deleted_by_id=None,
    )
    if parsed.search_vector is not None:  # PostgreSQL only (see _insert_messages)
        row["search_vector"] = parsed.search_vector
    return row


def _place(space_id: int, parsed: list[Parsed], rows: list[dict]):
    """Each message's thread (an id or a _NewThread), parent (an id, or (index,) for one in this batch), and the
    stored threads to merge. As in JWZ's algorithm a missing message is a placeholder: replies that name the
    same one (stored or in this batch) share a thread, and it joins them when it arrives."""
    refs_of = [threading_refs(p) for p in parsed]
    wanted = {ref for refs in refs_of for ref in refs}
    held = _held(space_id, wanted)  # msgid -> (id, thread id)
    sharing = _sharing(space_id, wanted)  # a referenced msgid -> threads of stored mail naming it
    threads, parents, merges = [], [], []
    for i, (p, row, refs) in enumerate(zip(parsed, rows, refs_of)):
        parent = next((held[ref] for ref in reversed(refs) if ref in held), None)
        found = ([parent[1]] if parent is not None else []) + [t for ref in refs for t in sharing.get(ref, ())]
        found = list({id(t) if isinstance(t, _NewThread) else t: t for t in map(_resolved, found) if t}.values())
        thread = found[0] if found else None
        if thread is None and not refs and (not p.message_id or _looks_like_reply(row["subject"])):
            thread = _subject_thread(space_id, row["subject"], threads)
        if thread is None:
            thread = _NewThread(row["subject"], row["date"])
        for other in found[1:]:  # one message names mail of several threads: they are one conversation
            if isinstance(other, _NewThread):
                other.into = thread
            else:
                merges.append((other, thread))
        threads.append(thread)
        parents.append(parent[0] if parent is not None else None)
        if row["message_id_header"] and row["message_id_header"] not in held:
            held[row["message_id_header"]] = ((i,), thread)
        for ref in refs:
            sharing.setdefault(ref, []).append(thread)
    return threads, parents, merges


def _sharing(space_id: int, refs: set[str]) -> dict[str, list]:
    """Stored messages that name any of `refs`: referenced msgid -> their thread ids (the placeholder's)."""
    found: dict[str, list] = {}
    refs = [r[:300] for r in refs]
    for start in range(0, len(refs), 500):
        for ref, thread_id in db.session.execute(select(MessageRef.ref, Message.thread_id).join(
                Message, Message.id == MessageRef.message_id).where(
                MessageRef.space_id == space_id, _among(MessageRef.ref, refs[start:start + 500]),
                Message.thread_id.is_not(None)).distinct()):
            found.setdefault(ref, []).append(thread_id)
    return found


def _held(space_id: int, refs: set[str]) -> dict[str, tuple[int, int]]:
    """Stored messages named by `refs`: Message-ID -> (message id, thread id), the first stored for a shared id."""
    found, refs = {}, [r[:300] for r in refs]
    for start in range(0, len(refs), 500):
        for msgid, message_id, thread_id in db.session.execute(select(
                Message.message_id_header, Message.id, Message.thread_id).where(
                Message.space_id == space_id, _among(Message.message_id_header, refs[start:start + 500]))
                .order_by(Message.id.desc())):
            found[msgid] = (message_id, thread_id)
    return found


def _touch_existing(joined: list[tuple[int, datetime]]) -> None:
    """Threads already stored that this batch's messages joined: count and newest date."""
    changes: dict[int, list] = {}
    for thread_id, date in joined:
        change = changes.setdefault(thread_id, [0, date])
        change[0] += 1
        change[1] = max(change[1], date)
    _touch([(thread_id, added, date) for thread_id, (added, date) in changes.items()])


def _looks_like_reply(subject: str) -> bool:
    """'Re: …' (in any of its languages), after any list tags; a forward or a plain subject is not."""
    return bool(_REPLY_START.match(_LIST_TAG.sub("", subject or "")))


def _subject_thread(space_id: int, subject: str, batch_threads: list) -> int | _NewThread | None:
    """Fallback for mail without threading headers: the newest thread with the same base subject."""
    key = subject_key(subject)
    if not key:
        return None
    stored = db.session.execute(select(Thread.id, Thread.last_date).where(
        Thread.space_id == space_id, Thread.subject_key == key).order_by(Thread.last_date.desc()).limit(1)).first()
    candidates = [(t.last_date, t) for t in batch_threads if isinstance(t, _NewThread) and t.key == key]
    if stored is not None:
        candidates.append((stored.last_date, stored.id))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def _adopt_children(space_id: int, ids: list[int], rows: list[dict]) -> None:
    """Replies stored before their parent move into its thread; direct replies get it as parent."""
    msgids = {row["message_id_header"] for row in rows if row["message_id_header"]}
    if not msgids:
        return
    children: dict[str, list] = {}
    msgid_list = list(msgids)
    for start in range(0, len(msgid_list), 500):
        for child in db.session.execute(select(
                MessageRef.ref, Message.id, Message.in_reply_to, Message.parent_id, Message.thread_id)
                .join(Message, Message.id == MessageRef.message_id)
                .where(MessageRef.space_id == space_id, _among(MessageRef.ref, msgid_list[start:start + 500]))):
            children.setdefault(child.ref, []).append(child)
    merged: dict[int, int] = {}  # old thread id -> the thread it went into, during this batch

    def current(thread_id):
        while thread_id in merged:
            thread_id = merged[thread_id]
        return thread_id

    for message_id, row in zip(ids, rows):
        msgid = row["message_id_header"]
        for child in children.get(msgid, ()):
            if child.id == message_id:
                continue
            if ((child.in_reply_to == msgid or child.parent_id is None) and child.parent_id != message_id
                    and not _is_ancestor(child.id, message_id)):
                db.session.execute(update(Message.__table__).where(Message.__table__.c.id == child.id)
                                   .values(parent_id=message_id))
            old, new = current(child.thread_id), current(row["thread_id"])
            if old is not None and new is not None and old != new:
                _merge(old, new)
                merged[old] = new


def _is_ancestor(candidate_id: int, message_id: int) -> bool:
    """True when `candidate_id` is already above `message_id` (a References loop would make a cycle)."""
    seen, node = set(), message_id
    while node is not None and node not in seen:
        if node == candidate_id:
            return True
        seen.add(node)
        node = db.session.scalar(select(Message.parent_id).where(Message.id == node))
    return False


def _merge(old_thread_id: int, thread_id: int) -> None:
    table = Message.__table__
    moved = db.session.execute(update(table).where(table.c.thread_id == old_thread_id)
                               .values(thread_id=thread_id)).rowcount
    old_last = db.session.scalar(select(Thread.last_date).where(Thread.id == old_thread_id))
    _touch([(thread_id, moved, old_last)])
    db.session.execute(delete(Thread.__table__).where(Thread.__table__.c.id == old_thread_id))


def _touch(changes: list[tuple[int, int, datetime | None]]) -> None:
    """(thread id, messages added, their newest date or None) for each thread: count them and move its newest date
    forward, in one statement for them all (one UPDATE a thread was a tenth of a fetch's time, docs/benchmarks.md,
    B1). A None date leaves the thread's own (`last_date < NULL` is not true)."""
    if not changes:
        return
    table = Thread.__table__
    newer = bindparam("t_date", type_=table.c.last_date.type)
    db.session.execute(update(table).where(table.c.id == bindparam("t_id")).values(
        message_count=func.coalesce(table.c.message_count, 0) + bindparam("t_added"),
        last_date=case((or_(table.c.last_date.is_(None), table.c.last_date < newer), newer), else_=table.c.last_date)),
        [{"t_id": thread_id, "t_added": added, "t_date": date} for thread_id, added, date in changes])
