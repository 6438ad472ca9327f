"""The rough edges a new user met in the first hour, one assertion each (issue 18); the browser ones are in
tests/e2e/test_rough_edges_journey.py."""
import re

import pytest

from tests.archive.helpers import message as make_message
from tests.archive.helpers import team_with_reader
from tests.outgoing.helpers import add_server
from webapp.archive import ingest
from webapp.archive.display import format_size
from webapp.spaces.services import create_site_space


@pytest.fixture
def reader(app, db, make_user, login):
    return team_with_reader(db, make_user, login)


def _links(body: str) -> dict[str, str]:
    return {text: href.replace("&amp;", "&") for href, text in
            re.findall(r'<a href="([^"]+)"[^>]*rel="(?:prev|next)">([^<]+)</a>', body)}


def test_pager_has_newer_beside_older_and_says_where_you_are(client, reader, db):
    for i in range(130):
        ingest.store(reader.id, None, make_message(i, subject=f"Number {i:03d}"))
    db.session.commit()
    first = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    assert "Messages 1–50" in first and set(_links(first)) == {"Older →"}
    second = client.get(_links(first)["Older →"]).get_data(as_text=True)
    third = client.get(_links(second)["Older →"]).get_data(as_text=True)
    assert "Messages 101–130" in third and set(_links(third)) == {"← Newer"}
    back = client.get(_links(third)["← Newer"]).get_data(as_text=True)
    assert re.findall(r"Number (\d{3})", back)[0] == "079" and "Messages 51–100" in back
    newest = client.get(_links(back)["← Newest"]).get_data(as_text=True)  # the page before is the first one
    assert re.findall(r"Number (\d{3})", newest)[0] == "129" and "Messages 1–50" in newest


@pytest.mark.parametrize("size, shown", [(0, "0 bytes"), (1, "1 byte"), (312, "312 bytes"), (1536, "1.5 KB"),
                                         (5 * 1024 * 1024, "5.0 MB"), (40 * 1024 * 1024, "40 MB")])
def test_sizes_read_as_people_read_them(size, shown):
    assert format_size(size) == shown


def test_a_small_attachment_shows_its_bytes(client, reader, db):
    message_id, _ = ingest.store(reader.id, None, make_message(1, attachment=True))
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}").get_data(as_text=True)
    assert re.search(r"application/pdf, \d+ bytes", page) and "0.0 KB" not in page


def test_the_lan_host_message_names_a_menu_path_that_exists(app, client, make_user, login, db):
    from webapp.archive.mailbox import MailboxError
    from webapp.mailnet import resolve_allowed

    with pytest.raises(MailboxError) as refused:
        resolve_allowed("127.0.0.1", 993, "")
    path = re.search(r"in (Administration › [^,]+),", refused.value.message).group(1).split(" › ")
    login(make_user("root", admin=True))
    assert path[1] in client.get("/admin/users").get_data(as_text=True)  # the tab
    assert f">{path[2]}</a>" in client.get("/admin/apps").get_data(as_text=True)  # the link on it
    label = re.search(r'under "([^"]+)"', refused.value.message).group(1)
    assert label in client.get("/admin/mail-archiving").get_data(as_text=True)


def test_unknown_from_name_variables_are_refused_with_the_known_ones(app, client, make_user, login, sinks, db):
    from webapp.outgoing.models import SmtpServer

    login(make_user("root", admin=True))
    page = client.post("/admin/mail-servers/new", data={
        "name": "Relay", "from_address": "team@example.org", "from_name": "${full_name} via ${site}",
        "host": "localhost", "port": "25", "security": "none", "timeout_seconds": "5", "reply_to_policy": "none",
        "auth_method": "password"}).get_data(as_text=True)
    assert ("Unknown variable ${full_name}, ${site}: the From name knows ${fullname}, ${email}, ${email.hostname}."
            in page.replace("&#36;", "$"))
    assert db.session.query(SmtpServer).count() == 0


def test_the_sites_own_mail_has_no_via(app, make_user, sinks, run_jobs, db):
    from webapp.outgoing.queue import queue_mail
    from webapp.settings import SiteSettings

    SiteSettings.get().site_title = "Team Hub"
    add_server(sinks, sinks.plain, from_name="${fullname} via Team Hub")
    ann = make_user("ann", full_name="Ann Lee")
    queue_mail("x@example.org", "Report", "Body")  # the site's own mail: no actor
    queue_mail("y@example.org", "Edited", "Body", actor=ann)
    db.session.commit()
    run_jobs()
    froms = {m.rcpt_tos[0]: m.message["From"] for m in sinks.plain.messages}
    assert froms == {"x@example.org": "Team Hub <spacemail@example.org>",
                     "y@example.org": "Ann Lee via Team Hub <spacemail@example.org>"}


def test_optional_descriptions_say_so(client, make_user, login):
    login(make_user("root", admin=True))
    assert "Description (optional)" in client.get("/spaces/new").get_data(as_text=True)


def test_password_rules_are_shown_before_the_first_error(client, make_user, login):
    login(make_user("root", admin=True))
    assert "At least 10 characters" in client.get("/admin/users/new").get_data(as_text=True)
    assert "At least 10 characters" in client.get("/profile").get_data(as_text=True)


def test_old_mail_links_with_the_app_off_say_why(client, reader, db):
    from webapp.settings import SiteSettings

    message_id, _ = ingest.store(reader.id, None, make_message(1))
    SiteSettings.get().mail_archiving_enabled = False
    db.session.commit()
    page = client.get(f"/spaces/TEAM/mail/messages/{message_id}")
    assert page.status_code == 404 and "Mail archiving is switched off on this site" in page.get_data(as_text=True)


def test_switching_the_app_off_and_deleting_failed_mail_ask_first(client, make_user, login, db):
    from webapp.outgoing.models import FAILED, OutboundMail

    login(make_user("root", admin=True))
    assert 'hx-confirm="Switch off mail archiving for every space?' in client.get("/admin/apps").get_data(as_text=True)
    db.session.add(OutboundMail(recipient="gone@example.org", subject="s", body_text="b", message_id="<x@y>",
                                state=FAILED, last_error="550 no such user"))
    db.session.commit()
    queue = client.get("/admin/mail-queue").get_data(as_text=True)
    assert 'hx-confirm="Delete the mail to gone@example.org for good?' in queue


def test_a_thread_page_links_the_newer_and_older_thread(client, reader, db):
    for i in range(3):
        ingest.store(reader.id, None, make_message(i, subject=f"Topic {i}"))
    db.session.commit()
    from webapp.archive.models import Thread

    middle = db.session.query(Thread).filter_by(subject="Topic 1").one()
    page = client.get(f"/spaces/TEAM/mail/threads/{middle.id}").get_data(as_text=True)
    assert "← Newer thread: Topic 2" in page and "Older thread: Topic 0 →" in page


def test_saving_an_edit_says_when_watchers_are_told(app, client, make_user, login, db):
    from webapp.content.services import create_page
    from webapp.notify.events import pending_edit
    from webapp.settings import format_local

    ann = make_user("ann")
    space = create_site_space(ann, "TEAM", "Team")
    page = create_page(space, ann, "Runbook", "v1")
    db.session.commit()
    login(ann)
    saved = client.post(f"/spaces/TEAM/pages/{page.id}/edit", data={"title": "Runbook", "body": "v2", "version": "1"},
                        follow_redirects=True).get_data(as_text=True)
    with app.test_request_context():
        at = format_local(pending_edit(page, ann).send_after, "%H:%M")
    assert f"Saved version 2. Watchers will be told at {at}, with any further edits you make before then." in saved


def test_daily_report_subject_beside_its_hour_with_a_preview(app, client, make_user, login, sinks, run_jobs, db):
    from webapp.content.services import create_page
    from webapp.notify.models import Watch
    from webapp.notify.report import send_reports

    root = make_user("root", admin=True)
    space = create_site_space(root, "TEAM", "Team")
    db.session.add(Watch(user_id=root.id, scope="space", space_id=space.id))
    root.daily_report = True
    create_page(space, make_user("ann"), "Runbook", "v1")
    db.session.commit()
    login(root)
    page = client.get("/admin/settings").get_data(as_text=True)
    assert page.index("Daily report at") < page.index("Daily report subject") < page.index("The next daily report")
    assert "Runbook" in page.split("Yours, if it went out now")[1]  # the admin's own next report, previewed
    form = {"site_title": "Team Hub", "base_url": "", "time_zone": "UTC", "notify_coalesce_minutes": "10",
            "daily_report_hour": "8", "daily_report_subject": "Team Hub: yesterday"}
    assert client.post("/admin/settings", data=form).status_code == 302
    add_server(sinks, sinks.plain)
    send_reports()
    db.session.commit()
    run_jobs()
    subjects = [m.message["Subject"] for m in sinks.plain.messages]
    assert "[Spacemail] Team Hub: yesterday" in subjects and "[Spacemail] Your daily report" not in subjects


def test_fetch_shows_live_counts_disables_its_button_and_tells_the_list(app, client, make_user, login, db):
    from webapp.archive.models import FetchRun
    from tests.archive.helpers import team_inbox

    ann = make_user("ann")
    space = create_site_space(ann, "TEAM", "Team")
    account = team_inbox(space)
    db.session.add(FetchRun(account_id=account.id, state="running", total=1200, fetched=300, duplicates=12))
    db.session.commit()
    login(ann)
    status = client.htmx_get("/spaces/TEAM/mail/fetch-status?known=0")
    body = status.get_data(as_text=True)
    assert "fetching: 312 of 1,200…" in body
    assert re.search(r"<button[^>]*disabled[^>]*>Fetching…</button>", body)
    assert "HX-Trigger" not in status.headers  # nothing new yet
    ingest.store(space.id, None, make_message(1))
    db.session.commit()
    assert client.htmx_get("/spaces/TEAM/mail/fetch-status?known=0").headers["HX-Trigger"] == "mail-arrived"
    page = client.get("/spaces/TEAM/mail").get_data(as_text=True)
    assert 'hx-trigger="mail-arrived from:body"' in page  # the list that fetches itself again


def test_flush_answers_in_place_and_the_table_follows(app, client, make_user, login, sinks, run_jobs, db):
    from webapp.outgoing.queue import queue_mail

    add_server(sinks, sinks.plain)
    login(make_user("root", admin=True))
    for i in range(12):
        queue_mail(f"r{i}@example.org", f"Mail {i}", "Body")
    db.session.commit()
    flushed = client.htmx_post("/admin/mail-queue/flush").get_data(as_text=True)
    assert "Sending 12 queued mails now" in flushed and 'hx-trigger="load delay:2s"' in flushed  # it polls
    run_jobs()
    after = client.htmx_get("/admin/mail-queue").get_data(as_text=True)
    assert "Nothing is waiting to be sent." in after and 'hx-trigger="load delay:2s"' not in after


@pytest.mark.parametrize("name, key", [("Team Hub", "TEAMHUB"), ("Product Design and Research", "PDAR"),
                                       ("Équipe Réseau", "EQUIPERESE"), ("2026 Plans", "PLANS"), ("Ops", "OPS")])
def test_the_space_key_is_made_from_the_name_when_left_empty(client, make_user, login, db, name, key):
    from webapp.spaces.models import Space

    login(make_user("root", admin=True))
    assert client.post("/spaces/new", data={"name": name, "key": ""}).status_code == 302
    assert db.session.query(Space).filter_by(name=name).one().key == key
    client.post("/spaces/new", data={"name": name, "key": ""})
    assert db.session.query(Space).filter_by(key=key + "2").one().name == name  # taken: a digit added
