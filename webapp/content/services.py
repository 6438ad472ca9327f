"""Pages, blog posts and comments: every change is saved with its version and announced (webapp.signals)."""
from sqlalchemy import func, select

from webapp.content.models import BLOG, PAGE, Comment, Page, PageVersion
from webapp.errors import UserError
from webapp.extensions import db
from webapp.signals import content_changed
from webapp.spaces.models import Space
from webapp.timeutil import utcnow


class ContentError(UserError):
    """A page, post or comment problem the user can fix."""


def create_page(space: Space, actor, title: str, body: str, kind: str = PAGE) -> Page:
    page = Page(space_id=space.id, kind=kind, title=title, body=body, version=1, created_by_id=actor.id,
                updated_by_id=actor.id)
    db.session.add(page)
    db.session.flush()
    db.session.add(PageVersion(page_id=page.id, version=1, title=title, body=body, author_id=actor.id))
    content_changed.send(page, kind="created", actor=actor, from_version=None, to_version=1)
    return page


def edit_page(page: Page, actor, title: str, body: str, expected_version: int | None = None) -> bool:
    """Save a new version; False when nothing changed. A stale form (someone saved meanwhile) is refused."""
    if expected_version is not None and expected_version != page.version:
        raise ContentError(f"Someone saved version {page.version} while you were editing. Copy your text, "
                           "reload the page and apply your change again.")
    if (title, body) == (page.title, page.body):
        return False
    previous = page.version
    page.title, page.body, page.version = title, body, previous + 1
    page.updated_by_id, page.updated_at = actor.id, utcnow()
    db.session.add(PageVersion(page_id=page.id, version=page.version, title=title, body=body, author_id=actor.id))
    content_changed.send(page, kind="edited", actor=actor, from_version=previous, to_version=page.version)
    return True


def add_comment(page: Page, actor, body: str, via: str = "web") -> Comment:
    comment = Comment(page_id=page.id, author_id=actor.id, body=body, via=via)
    db.session.add(comment)
    db.session.flush()
    content_changed.send(page, kind="commented", actor=actor, comment=comment)
    return comment


def pages_of(space: Space, kind: str = PAGE, limit: int = 200) -> list[Page]:
    order = Page.created_at.desc() if kind == BLOG else func.lower(Page.title)
    return list(db.session.scalars(select(Page).where(Page.space_id == space.id, Page.kind == kind)
                                   .order_by(order).limit(limit)))


def versions_of(page: Page) -> list[PageVersion]:
    return list(db.session.scalars(select(PageVersion).where(PageVersion.page_id == page.id)
                                   .order_by(PageVersion.version.desc())))


def version(page: Page, number: int) -> PageVersion | None:
    return db.session.scalar(select(PageVersion).where(PageVersion.page_id == page.id, PageVersion.version == number))


def comments_of(page: Page) -> list[Comment]:
    return list(db.session.scalars(select(Comment).where(Comment.page_id == page.id).order_by(Comment.id)))
