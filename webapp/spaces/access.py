"""Who may do what in a space. Every space route asks here; nothing is checked only in templates."""
from flask import abort
from flask_login import current_user
from sqlalchemy import select

from webapp.extensions import db
from webapp.spaces.models import ADMIN, ROLE_RANK, VIEW, Space, SpaceRole


def role_in(user, space: Space) -> str | None:
    """The highest role `user` holds in `space`, or None."""
    if user is None or not user.is_authenticated:
        return None
    if user.is_admin or space.owner_id == user.id:
        return ADMIN
    role = db.session.scalar(select(SpaceRole.role).where(SpaceRole.space_id == space.id, SpaceRole.user_id == user.id))
    if role is None and space.everyone_can_view:
        return VIEW
    return role


def can(user, space: Space, needed: str) -> bool:
    role = role_in(user, space)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[needed]


def space_for(key: str, needed: str = VIEW) -> Space:
    """The space with this key if the current user holds `needed` there: else 404 or 403."""
    space = db.session.scalar(select(Space).where(Space.key == key))
    if space is None:
        abort(404)
    if not can(current_user, space, needed):
        abort(403)
    return space


def visible_spaces(user) -> list[Space]:
    """Spaces `user` can view, site spaces first, each list by name."""
    query = select(Space).order_by(Space.kind.desc(), Space.name)
    if not user.is_admin:
        mine = select(SpaceRole.space_id).where(SpaceRole.user_id == user.id)
        query = query.where(Space.everyone_can_view | (Space.owner_id == user.id) | Space.id.in_(mine))
    return list(db.session.scalars(query))
