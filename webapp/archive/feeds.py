"""An archive as an Atom feed: the newest messages, or the newest threads by their first message."""
import re

from sqlalchemy import func, select

from webapp.archive.models import Message, Thread
from webapp.extensions import db

FEED_SIZE = 50
SUMMARY_CHARS = 400
# Characters XML 1.0 cannot carry at all (mail holds them; a feed with one does not parse).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(value: str | None) -> str:
    return _NOT_XML.sub("", value or "")


def _rows(ids: list[int]) -> list:
    if not ids:
        return []
    found = {row.id: row for row in db.session.execute(
        select(Message.id, Message.subject, Message.from_name, Message.from_addr, Message.date,
               Message.message_id_header, func.substr(Message.body_text, 1, SUMMARY_CHARS).label("summary"))
        .where(Message.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def newest_messages(space_id: int) -> list:
    ids = list(db.session.scalars(select(Message.id).where(Message.space_id == space_id, Message.deleted_at.is_(None))
                                  .order_by(Message.date.desc(), Message.id.desc()).limit(FEED_SIZE)))
    return _rows(ids)


def newest_threads(space_id: int) -> list:
    """The first message of each of the newest threads (a thread's id grows with its arrival)."""
    threads = list(db.session.scalars(select(Thread.id).where(Thread.space_id == space_id, Thread.message_count > 0)
                                      .order_by(Thread.id.desc()).limit(FEED_SIZE)))
    if not threads:
        return []
    firsts = dict(db.session.execute(select(Message.thread_id, func.min(Message.id)).where(
        Message.thread_id.in_(threads), Message.deleted_at.is_(None)).group_by(Message.thread_id)).all())
    return _rows([firsts[t] for t in threads if t in firsts])
