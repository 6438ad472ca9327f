"""Who hears of a change: watchers of the page, its space or its blog who can still view it."""
import re
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from webapp.auth.models import User
from webapp.extensions import db
from webapp.notify.models import BLOG, PAGE, SPACE, Watch
from webapp.spaces.models import Space, SpaceRole

REASONS = {PAGE: "You are getting this because you watch this page.",
           BLOG: "You are getting this because you watch the blog of {space}.",
           SPACE: "You are getting this because you watch the space {space}."}
_SPECIFIC = {PAGE: 0, BLOG: 1, SPACE: 2}


@dataclass
class Recipient:
    user: User
    watch: Watch

    @property
    def reason(self) -> str:
        return REASONS[self.watch.scope]


def viewer_ids(space: Space) -> set[int] | None:
    """Ids of the people who may view `space`, or None when every signed-in person may."""
    if space.everyone_can_view:
        return None
    ids = set(db.session.scalars(select(SpaceRole.user_id).where(SpaceRole.space_id == space.id)))
    ids |= set(db.session.scalars(select(User.id).where(User.is_admin.is_(True))))
    if space.owner_id:
        ids.add(space.owner_id)
    return ids


def recipients(page, space: Space, actor_id: int | None) -> list[Recipient]:
    """Each watcher once, by their most specific watch; the actor only if they asked for their own changes."""
    scopes = [and_(Watch.scope == PAGE, Watch.page_id == page.id),
              and_(Watch.scope == SPACE, Watch.space_id == space.id)]
    if page.is_blog:
        scopes.append(and_(Watch.scope == BLOG, Watch.space_id == space.id))
    rows = db.session.execute(select(Watch, User).join(User, User.id == Watch.user_id)
                              .where(or_(*scopes), User.active.is_(True))).all()
    allowed = viewer_ids(space)
    chosen: dict[int, Recipient] = {}
    for watch, user in rows:
        if user.id == actor_id and not user.notify_own_actions:
            continue
        if allowed is not None and user.id not in allowed:
            continue
        if user.id not in chosen or _SPECIFIC[watch.scope] < _SPECIFIC[chosen[user.id].watch.scope]:
            chosen[user.id] = Recipient(user, watch)
    return sorted(chosen.values(), key=lambda r: r.user.id)


def list_label(space: Space) -> str:
    """A dot-atom for List-Id from the space key (personal keys start with ~)."""
    return re.sub(r"[^a-z0-9-]+", "-", space.key.lower()).strip("-") or f"space-{space.id}"
