"""Deleting mail: to the space's trash, restorable for 30 days, then purged by the scheduled job."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from tests.archive.helpers import message as make_message
from webapp.archive import ingest, search
from webapp.archive.models import Message, MessageRaw, Thread
from webapp.spaces.models import VIEW, SpaceRole
from webapp.spaces.services import create_site_space
from webapp.timeutil import utcnow
from workers.fetch import purge_trash


@pytest.fixture
def team(app, db, make_user):
    admin, reader = make_user("ann"), make_user("rita")
    space = create_site_space(admin, "TEAM", "Team")
    role = SpaceRole(space=space, user=reader, role=VIEW)
    db.session.add(role)
    first, _ = ingest.store(space.id, None, make_message(1, subject="Quarterly budget", msgid="a@x"))
    reply, _ = ingest.store(space.id, None, make_message(2, subject="Re: Quarterly budget", msgid="b@x",
                                                         reply_to="a@x"))
    db.session.commit()
    return space, admin, reader, role, first, reply


def test_readers_cannot_delete_unless_given_the_option(client, login, db, team):
    space, admin, reader, role, first, _ = team
    login(reader)
    assert client.post(f"/spaces/TEAM/mail/messages/{first}/delete").status_code == 403
    assert "Delete" not in client.get(f"/spaces/TEAM/mail/messages/{first}").get_data(as_text=True)
    role.can_delete_mail = True
    db.session.commit()
    assert client.post(f"/spaces/TEAM/mail/messages/{first}/delete").status_code == 302
    db.session.expire_all()
    assert db.session.get(Message, first).deleted_at is not None
    assert client.get(f"/spaces/TEAM/mail/messages/{first}").status_code == 404
    assert [h.message_id for h in search.search(space.id, "quarterly")] == [team[5]]  # only the reply is left


def test_space_admin_gives_the_option_in_place(client, login, db, team):
    space, admin, reader, role, *_ = team
    login(admin)
    row = client.htmx_post(f"/spaces/TEAM/permissions/{role.id}/delete-mail", data={"value": "on"})
    assert "<html" not in row.get_data(as_text=True) and "Deletes mail" in row.get_data(as_text=True)
    db.session.refresh(role)
    assert role.can_delete_mail


def test_thread_delete_restore_and_purge(client, login, db, team):
    space, admin, reader, role, first, reply = team
    login(admin)
    thread_id = db.session.get(Message, first).thread_id
    client.post(f"/spaces/TEAM/mail/threads/{thread_id}/delete")
    db.session.expire_all()
    assert db.session.get(Thread, thread_id).message_count == 0
    assert "Quarterly budget" not in client.get("/spaces/TEAM/mail?view=threads").get_data(as_text=True)
    trash = client.get("/spaces/TEAM/mail/trash").get_data(as_text=True)
    assert "Quarterly budget" in trash and "30 days" in trash
    restored = client.htmx_post(f"/spaces/TEAM/mail/trash/{first}/restore")
    assert restored.status_code == 200 and restored.get_data(as_text=True).strip() == ""
    db.session.expire_all()
    assert db.session.get(Thread, thread_id).message_count == 1
    assert [h.message_id for h in search.search(space.id, "budget")] == [first]

    reply_message = db.session.get(Message, reply)
    reply_message.deleted_at = utcnow() - timedelta(days=29)
    db.session.commit()
    purge_trash()
    assert db.session.get(Message, reply) is not None  # 29 days: still restorable
    reply_message.deleted_at = utcnow() - timedelta(days=31)
    db.session.commit()
    purge_trash()
    db.session.expire_all()
    assert db.session.get(Message, reply) is None
    assert db.session.scalar(select(func.count()).select_from(MessageRaw).where(MessageRaw.message_id == reply)) == 0
    if db.engine.dialect.name == "sqlite":  # the index forgot the purged message's words (on PostgreSQL the index
        # is the message row's own column): only the first message still holds "budget", and the reply's key is gone
        assert db.session.execute(text("SELECT rowid & :mask FROM search_messages WHERE search_messages MATCH "
                                       "'budget'"), {"mask": search.ID_MASK}).scalars().all() == [first]
        db.session.execute(text("INSERT INTO search_messages (search_messages) VALUES ('integrity-check')"))
    assert db.session.get(Message, first).deleted_at is None


def test_the_mail_tab_count_follows_trash_restore_purge_and_new_mail(client, login, db, team):
    """The count is kept between requests until the archive changes: each change shows at once."""
    import re

    space, admin, reader, role, first, reply = team

    def shown() -> int:
        page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
        return int(re.search(r'<strong id="message-count">(\d+)</strong>', page).group(1))

    login(admin)
    assert shown() == 2
    client.post(f"/spaces/TEAM/mail/messages/{reply}/delete")
    assert shown() == 1
    client.htmx_post(f"/spaces/TEAM/mail/trash/{reply}/restore")
    assert shown() == 2
    ingest.store(space.id, None, make_message(3))
    db.session.commit()
    assert shown() == 3
    client.post(f"/spaces/TEAM/mail/messages/{reply}/delete")
    db.session.get(Message, reply).deleted_at = utcnow() - timedelta(days=31)
    db.session.commit()
    assert shown() == 2
    purge_trash()
    assert shown() == 2
    other = create_site_space(admin, "OTHER", "Other")  # mail elsewhere does not change this space's count
    db.session.commit()
    ingest.store(other.id, None, make_message(4))
    db.session.commit()
    assert shown() == 2


def test_the_listed_mail_follows_every_change_and_each_readers_time_zone(client, login, db, team):
    """Rendered lists are kept between requests until the archive changes: each change shows at once, in the
    page and in its htmx update, and a list kept for one reader never shows another's time zone."""
    import re

    space, admin, reader, role, first, reply = team
    admin.time_zone, reader.time_zone = "Pacific/Kiritimati", "UTC"  # 14 hours apart
    db.session.commit()

    def listed(htmx: bool = False) -> list[tuple[int, str]]:
        response = client.htmx_get("/spaces/TEAM/mail") if htmx else client.get("/spaces/TEAM/mail")
        rows = re.findall(r'/mail/messages/(\d+)">.*?<td>([\d-]+ [\d:]+)</td>\s*<td>(?:<a class="badge"[^>]*>(\d+)</a>)?',
                          response.get_data(as_text=True), re.S)
        return [(int(i), date, int(size or 1)) for i, date, size in rows]

    login(admin)
    assert listed() == [(reply, "2026-01-01 14:02", 2), (first, "2026-01-01 14:01", 2)]
    client.post(f"/spaces/TEAM/mail/messages/{reply}/delete")
    assert listed() == listed(htmx=True) == [(first, "2026-01-01 14:01", 1)]
    client.htmx_post(f"/spaces/TEAM/mail/trash/{reply}/restore")
    assert listed(htmx=True) == [(reply, "2026-01-01 14:02", 2), (first, "2026-01-01 14:01", 2)]
    third, _ = ingest.store(space.id, None, make_message(3, subject="Re: Quarterly budget", reply_to="b@x"))
    db.session.commit()
    assert listed() == [(third, "2026-01-01 14:03", 3), (reply, "2026-01-01 14:02", 3), (first, "2026-01-01 14:01", 3)]
    client.post("/logout")
    login(reader)
    assert listed() == [(third, "2026-01-01 00:03", 3), (reply, "2026-01-01 00:02", 3), (first, "2026-01-01 00:01", 3)]
