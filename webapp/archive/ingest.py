"""Raw bytes -> a stored message: dedupe, parse within limits, thread. Never raises on bad mail."""
import hashlib
import re
from datetime import datetime

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from webapp.archive import search
from webapp.archive.models import Message, MessageRaw, MessageRef, Thread
from webapp.archive.parse import Parsed, parse
from webapp.extensions import db
from webapp.timeutil import utcnow

_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|antw)\s*(\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+", re.I)


def subject_key(subject: str) -> str:
    """'Re: [team] Fwd: Lunch' -> 'lunch': how replies without headers find their thread."""
    return _SUBJECT_PREFIX.sub("", subject or "").strip().lower()[:200]


def existing(space_id: int, sha256: str) -> int | None:
    return db.session.scalar(select(Message.id).where(Message.space_id == space_id, Message.sha256 == sha256))


def store(space_id: int, account_id: int | None, raw: bytes) -> tuple[int, bool]:
    """Archive `raw` in the space unless it is there already: (message id, created). The caller commits."""
    sha = hashlib.sha256(raw).hexdigest()
    found = existing(space_id, sha)
    if found:
        return found, False
    parsed = parse(raw, current_app.config["ARCHIVE_PARSE_LIMIT"])
    try:
        with db.session.begin_nested():  # another fetch may store the same bytes at the same moment
            message = _new_message(space_id, account_id, parsed)
            db.session.add(message)
            db.session.flush()
            raw_row = MessageRaw(message_id=message.id, raw=raw)
            db.session.add(raw_row)
            db.session.add_all(MessageRef(space_id=space_id, message_id=message.id, ref=ref[:300])
                               for ref in parsed.references)
            _thread(message, parsed)
            db.session.flush()
            search.index(message)
        db.session.expunge(raw_row)  # written: do not keep a batch's raw bytes in memory until commit
    except IntegrityError:
        return existing(space_id, sha), False
    return message.id, True


def _new_message(space_id: int, account_id: int | None, parsed: Parsed) -> Message:
    now = utcnow()
    return Message(
        space_id=space_id, account_id=account_id, sha256=parsed.sha256, size=parsed.size,
        message_id_header=(parsed.message_id or "")[:300] or None, in_reply_to=parsed.in_reply_to,
        subject=parsed.subject, from_name=parsed.from_name, from_addr=parsed.from_addr,
        to_addrs=parsed.to_addrs, cc_addrs=parsed.cc_addrs, date=parsed.date or now,
        has_attachments=bool(parsed.attachments), attachments=parsed.attachments, body_text=parsed.text,
        parse_problem=parsed.problem, received_at=now,
    )


def _thread(message: Message, parsed: Parsed) -> None:
    """Join the parent's thread, adopt replies that arrived first, or start a thread."""
    space_id = message.space_id
    parent = None
    for ref in reversed(parsed.references):  # the nearest ancestor we hold
        parent = db.session.scalar(select(Message).where(
            Message.space_id == space_id, Message.message_id_header == ref, Message.id != message.id).limit(1))
        if parent is not None:
            break
    thread = parent.thread if parent is not None else None
    if parent is not None and parent.id != message.id:
        message.parent_id = parent.id
    if thread is None and not parsed.references and not parsed.message_id:
        thread = _subject_thread(space_id, message.subject)
    elif thread is None and not parsed.references:
        thread = _subject_thread(space_id, message.subject) if _looks_like_reply(message.subject) else None
    if thread is None:
        thread = Thread(space_id=space_id, subject=message.subject, subject_key=subject_key(message.subject))
        db.session.add(thread)
        db.session.flush()
    message.thread_id = thread.id
    _touch(thread, message.date, 1)
    if message.message_id_header:
        _adopt_children(message, thread)


def _looks_like_reply(subject: str) -> bool:
    return bool(_SUBJECT_PREFIX.match(subject or ""))


def _subject_thread(space_id: int, subject: str) -> Thread | None:
    """Fallback for mail without threading headers: the newest thread with the same base subject."""
    key = subject_key(subject)
    if not key:
        return None
    return db.session.scalar(select(Thread).where(Thread.space_id == space_id, Thread.subject_key == key)
                             .order_by(Thread.last_date.desc()).limit(1))


def _adopt_children(message: Message, thread: Thread) -> None:
    """Replies that arrived before this message move into its thread; direct replies get it as parent."""
    child_ids = db.session.scalars(select(MessageRef.message_id).where(
        MessageRef.space_id == message.space_id, MessageRef.ref == message.message_id_header,
        MessageRef.message_id != message.id)).all()
    if not child_ids:
        return
    children = db.session.scalars(select(Message).where(Message.id.in_(child_ids))).all()
    for child in children:
        if child.in_reply_to == message.message_id_header or child.parent_id is None:
            if not _is_ancestor(child, message):
                child.parent_id = message.id
    for old_thread_id in {c.thread_id for c in children if c.thread_id != thread.id}:
        _merge(old_thread_id, thread)


def _is_ancestor(candidate: Message, message: Message) -> bool:
    """True when `candidate` is already above `message` (a References loop would make a cycle)."""
    seen, node = set(), message
    while node is not None and node.id not in seen:
        if node.id == candidate.id:
            return True
        seen.add(node.id)
        node = db.session.get(Message, node.parent_id) if node.parent_id else None
    return False


def _merge(old_thread_id: int, thread: Thread) -> None:
    old = db.session.get(Thread, old_thread_id)
    moved = db.session.execute(update(Message).where(Message.thread_id == old_thread_id)
                               .values(thread_id=thread.id)).rowcount
    _touch(thread, old.last_date if old else None, moved)
    if old is not None:
        db.session.delete(old)


def _touch(thread: Thread, date: datetime | None, added: int) -> None:
    thread.message_count = (thread.message_count or 0) + added
    if date is not None and (thread.last_date is None or date > thread.last_date):
        thread.last_date = date
