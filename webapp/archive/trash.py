"""The space's trash: deleted mail stays restorable for 30 days, then a scheduled job purges it."""
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from webapp.archive import search
from webapp.archive.models import Message, SeenMessage, Thread
from webapp.extensions import db
from webapp.spaces.models import ADMIN, SpaceRole
from webapp.spaces.access import role_in
from webapp.timeutil import utcnow

KEEP_DAYS = 30


def may_delete(user, space) -> bool:
    """Space admins, and people whose role carries the "delete mail" option."""
    if role_in(user, space) == ADMIN:
        return True
    return bool(db.session.scalar(select(SpaceRole.can_delete_mail).where(
        SpaceRole.space_id == space.id, SpaceRole.user_id == user.id)))


def _recount(thread_ids) -> None:
    for thread_id in {t for t in thread_ids if t}:
        count = db.session.scalar(select(func.count(Message.id)).where(Message.thread_id == thread_id,
                                                                        Message.deleted_at.is_(None)))
        db.session.execute(update(Thread).where(Thread.id == thread_id).values(message_count=count))


def move_to_trash(messages: list[Message], user) -> int:
    now = utcnow()
    for message in messages:
        message.deleted_at, message.deleted_by_id = now, user.id
    db.session.flush()
    _recount(m.thread_id for m in messages)
    return len(messages)


def restore(message: Message) -> None:
    message.deleted_at = message.deleted_by_id = None
    db.session.flush()
    _recount([message.thread_id])


def in_trash(space_id: int) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.space_id == space_id, Message.deleted_at.is_not(None))
                                   .order_by(Message.deleted_at.desc()).limit(500)))


def purge(now=None) -> int:
    """Remove for good what has been in a trash for 30 days. Returns how many messages went."""
    cutoff = (now or utcnow()) - timedelta(days=KEEP_DAYS)
    ids = list(db.session.scalars(select(Message.id).where(Message.deleted_at < cutoff)))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        search.remove(chunk)
        db.session.execute(update(SeenMessage).where(SeenMessage.message_id.in_(chunk)).values(message_id=None))
        db.session.execute(update(Message).where(Message.parent_id.in_(chunk)).values(parent_id=None))
        db.session.execute(delete(Message).where(Message.id.in_(chunk)))
    db.session.commit()
    return len(ids)
