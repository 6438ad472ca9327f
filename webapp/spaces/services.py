"""Creating spaces and managing the roles people hold in them."""
import re
import unicodedata

from sqlalchemy import func, select

from webapp.auth.models import User
from webapp.errors import UserError
from webapp.extensions import db
from webapp.signals import access_changed
from webapp.spaces.models import ADMIN, PERSONAL, ROLE_RANK, SITE, Space, SpaceRole


class SpaceError(UserError):
    """A space or role change the user can fix."""


def create_personal_space(user: User) -> Space:
    space = Space(key=f"~{user.username}", name=user.full_name, kind=PERSONAL, owner_id=user.id)
    db.session.add(space)
    return space


def create_site_space(creator: User, key: str, name: str, description: str = "") -> Space:
    """A team space; its creator becomes its space admin. The caller commits."""
    if db.session.scalar(select(Space.id).where(func.upper(Space.key) == key.upper())):
        raise SpaceError(f"The space key {key} is taken.")
    space = Space(key=key, name=name, description=description, kind=SITE)
    db.session.add(space)
    db.session.flush()
    db.session.add(SpaceRole(space_id=space.id, user_id=creator.id, role=ADMIN))
    return space


def suggested_key(name: str) -> str:
    """A free space key from a name, as static/app.js suggests it while typing: "Team Hub" -> TEAMHUB,
    "Product Design and Research" -> PDAR (initials from three words on), a digit added when taken."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[A-Za-z0-9]+", ascii_name)
    base = "".join(w[0] for w in words) if len(words) >= 3 else "".join(words)[:10]
    base = re.sub(r"^[0-9]+", "", base.upper()) or "SPACE"
    base = base if len(base) >= 2 else base + "X"
    key, n = base, 1
    while db.session.scalar(select(Space.id).where(func.upper(Space.key) == key)):
        n += 1
        key = f"{base[:30]}{n}"
    return key


def update_space(space: Space, name: str, description: str, everyone_can_view: bool) -> None:
    closed = space.everyone_can_view and not everyone_can_view
    space.name, space.description, space.everyone_can_view = name, description, everyone_can_view
    if closed:
        db.session.flush()
        access_changed.send(space, user=None)


def roles_of(space: Space) -> list[SpaceRole]:
    return list(
        db.session.scalars(
            select(SpaceRole).join(User).where(SpaceRole.space_id == space.id).order_by(User.full_name, User.username)
        )
    )


def grant(space: Space, user: User, role: str) -> SpaceRole:
    """Give `user` a role in `space`, or change the one they have."""
    if role not in ROLE_RANK:
        raise SpaceError("Choose View, Edit or Space admin.")
    if space.owner_id == user.id:
        raise SpaceError("The owner of a personal space always administers it.")
    existing = db.session.scalar(select(SpaceRole).where(SpaceRole.space_id == space.id, SpaceRole.user_id == user.id))
    if existing is not None and existing.role == ADMIN and role != ADMIN:
        _keep_an_admin(space, existing)
    if existing is None:
        existing = SpaceRole(space_id=space.id, user_id=user.id, role=role)
        db.session.add(existing)
    existing.role = role
    db.session.flush()
    return existing


def revoke(space: Space, space_role: SpaceRole) -> None:
    if space_role.role == ADMIN:
        _keep_an_admin(space, space_role)
    user = db.session.get(User, space_role.user_id)
    db.session.delete(space_role)
    db.session.flush()
    access_changed.send(space, user=user)


def _keep_an_admin(space: Space, leaving: SpaceRole) -> None:
    """A site space never loses its last space admin (system admins could fix it, but nobody else)."""
    if space.kind != SITE:
        return
    others = db.session.scalar(
        select(func.count(SpaceRole.id)).where(
            SpaceRole.space_id == space.id, SpaceRole.role == ADMIN, SpaceRole.id != leaving.id
        )
    )
    if not others:
        raise SpaceError("A space needs at least one space admin: make someone else space admin first.")
