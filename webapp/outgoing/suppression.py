"""Which addresses no mail goes to (bounces.py decides; the queue asks here before it queues)."""
from sqlalchemy import select

from webapp.extensions import db
from webapp.outgoing.models import ACCOUNT, Suppression

UNSUPPRESSED_KINDS = (ACCOUNT, "test")  # asked for by the person or an admin just now: always sent


def suppression_of(address: str | None) -> Suppression | None:
    """Asked on every page (the bounce banner) without flushing the request's pending changes: a route that
    commits only when its session is dirty would otherwise find it clean and lose them."""
    if not address:
        return None
    with db.session.no_autoflush:
        return db.session.get(Suppression, address.lower())


def suppressed_among(addresses) -> set[str]:
    """Which of `addresses` (lower case) are suppressed: nothing is asked when none is."""
    if db.session.scalar(select(Suppression.address).limit(1)) is None:
        return set()
    wanted, found = sorted({a.lower() for a in addresses}), set()
    for start in range(0, len(wanted), 500):
        found.update(db.session.scalars(select(Suppression.address).where(
            Suppression.address.in_(wanted[start:start + 500]))))
    return found
