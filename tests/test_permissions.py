"""The permission matrix: every route x every kind of person -> the status they get.

A route added later without a row here fails test_every_route_has_a_row.
"""
from datetime import timedelta
from types import SimpleNamespace

import pytest
from redis import Redis

from tests.conftest import PASSWORD, Client, DatabaseImage, shared_make_user
from webapp.archive import ingest
from webapp.archive.models import ConnectionTest, Message
from webapp.archive.services import AccountData, create_account
from webapp.content.services import create_page, edit_page
from webapp.extensions import db as db_ext
from webapp.jobs import JobRun
from webapp.auth.models import AccountLink, UserSession
from webapp.notify.models import ContentEvent, Watch
from webapp.notify.watches import unwatch_token
from webapp.oauth.models import OAuthProvider
from webapp.outgoing.models import Bounce, DkimKey, SmtpTest
from webapp.outgoing.queue import queue_mail
from webapp.outgoing.servers import ServerData, create_server
from webapp.timeutil import utcnow
from webapp.spaces.models import ADMIN, VIEW, SpaceRole
from webapp.spaces.services import create_site_space

ACTORS = ("anonymous", "user", "viewer", "other_admin", "space_admin", "sysadmin")
OK, LOGIN = "ok", "login"


def expect(anonymous=LOGIN, user=OK, viewer=OK, other_admin=OK, space_admin=OK, sysadmin=OK):
    return dict(anonymous=anonymous, user=user, viewer=viewer, other_admin=other_admin,
                space_admin=space_admin, sysadmin=sysadmin)


ADMIN_ONLY = expect(user=403, viewer=403, other_admin=403, space_admin=403)
SPACE_ADMIN = expect(user=403, viewer=403, other_admin=403)
SPACE_VIEW = expect(user=403, other_admin=403)
SIGNED_IN = expect()
PUBLIC = expect(anonymous=OK)
NOT_FOUND = expect(user=404, viewer=404, other_admin=404, space_admin=404, sysadmin=404)
PERSONAL_SPACE = expect(user=403, viewer=403, other_admin=403, space_admin=403, sysadmin=403)
# TEAM's account addressed through OTHER: whoever administers OTHER learns nothing more than 404.
# TEAM's mail addressed through OTHER (where space_admin may view): nothing but 404 for those who may view OTHER.
CROSS_SPACE_VIEW = expect(user=403, viewer=403, other_admin=404, space_admin=404, sysadmin=404)
OTHER_SPACES_THING = expect(user=403, viewer=403, other_admin=404, space_admin=403, sysadmin=404)

# (endpoint, method, url kwargs from the world, form data, expectation)
MATRIX = [
    ("auth.login", "GET", {}, None, PUBLIC),
    ("auth.login", "POST", {}, {}, PUBLIC),
    ("auth.logout", "POST", {}, {}, expect(*[LOGIN] * 6)),  # always back to the sign-in page
    ("auth.setup", "GET", {}, None, expect(*[404] * 6)),
    ("auth.setup", "POST", {}, {}, expect(*[404] * 6)),
    ("auth.profile", "GET", {}, None, SIGNED_IN),
    ("auth.profile", "POST", {}, {}, SIGNED_IN),
    ("auth.change_password", "POST", {}, {}, SIGNED_IN),
    ("auth.try_again", "POST", {}, {}, SIGNED_IN),
    # One's own sessions only: another person's session id is 404; ending them all signs this browser out too.
    ("auth.end_session", "POST", {"session_id": "viewer_session"}, {},
     expect(user=404, other_admin=404, space_admin=404, sysadmin=404)),
    ("auth.end_all_sessions", "POST", {}, {}, expect(*[LOGIN] * 6)),
    # Mailed links: a wrong secret is 410 for everyone (signed in or not); asking for a reset link is public.
    ("auth.accept_invitation", "GET", {"token": "x" * 43}, None, expect(*[410] * 6)),
    ("auth.accept_invitation", "GET", {}, None, expect(*[410] * 6)),
    ("auth.accept_invitation", "POST", {}, {}, expect(*[410] * 6)),
    ("auth.forgot_password", "GET", {}, None, PUBLIC),
    ("auth.forgot_password", "POST", {}, {}, PUBLIC),
    ("auth.reset_password", "GET", {"token": "x" * 43}, None, expect(*[410] * 6)),
    ("auth.reset_password", "GET", {}, None, expect(*[410] * 6)),
    ("auth.reset_password", "POST", {}, {}, expect(*[410] * 6)),
    ("auth.confirm_email", "GET", {"token": "x" * 43}, None, expect(*[410] * 6)),
    ("auth.confirm_email", "GET", {}, None, expect(*[410] * 6)),
    ("auth.confirm_email", "POST", {}, {}, expect(*[410] * 6)),
    ("auth.cancel_email_change", "POST", {}, {}, SIGNED_IN),
    ("auth.reset_feed_token", "POST", {}, {}, SIGNED_IN),
    ("spaces.index", "GET", {}, None, SIGNED_IN),
    ("spaces.directory", "GET", {}, None, SIGNED_IN),
    ("spaces.new_space", "GET", {}, None, expect(user=403, viewer=403, other_admin=403, space_admin=403)),
    ("spaces.new_space", "POST", {}, {}, expect(user=403, viewer=403, other_admin=403, space_admin=403)),
    ("spaces.home", "GET", {"key": "TEAM"}, None, SPACE_VIEW),
    ("spaces.home", "GET", {"key": "NOPE"}, None, NOT_FOUND),
    ("spaces.home", "GET", {"key": "~viewer"}, None, expect(user=403, other_admin=403, space_admin=403)),
    ("spaces.settings", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("spaces.settings", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("spaces.settings", "GET", {"key": "~viewer"}, None, expect(user=403, other_admin=403, space_admin=403)),
    ("spaces.permissions", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("spaces.permissions", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("spaces.change_role", "POST", {"key": "TEAM", "role_id": "victim_role"}, {"role": "edit"}, SPACE_ADMIN),
    ("spaces.change_role", "POST", {"key": "OTHER", "role_id": "victim_role"}, {"role": "edit"},
     expect(user=403, viewer=403, other_admin=404, space_admin=403, sysadmin=404)),
    ("spaces.remove_role", "POST", {"key": "TEAM", "role_id": "victim_role"}, {}, SPACE_ADMIN),
    # Inviting to a space: its admins when the site allows it (here it does not), system admins always.
    ("spaces.invite", "POST", {"key": "TEAM"}, {}, ADMIN_ONLY),
    ("spaces.invitation_action", "POST", {"key": "TEAM", "link_id": "invitation", "action": "resend"}, {}, ADMIN_ONLY),
    ("spaces.invitation_action", "POST", {"key": "TEAM", "link_id": "invitation", "action": "revoke"}, {}, ADMIN_ONLY),
    ("spaces.invitation_action", "POST", {"key": "OTHER", "link_id": "invitation", "action": "revoke"}, {},
     expect(user=403, viewer=403, other_admin=403, space_admin=403, sysadmin=404)),
    ("admin.index", "GET", {}, None, ADMIN_ONLY),
    ("admin.users", "GET", {}, None, ADMIN_ONLY),
    ("admin.new_user", "GET", {}, None, ADMIN_ONLY),
    ("admin.new_user", "POST", {}, {}, ADMIN_ONLY),
    ("admin.set_user_flag", "POST", {"user_id": "victim", "flag": "active"}, {"value": "on"}, ADMIN_ONLY),
    ("admin.end_user_sessions", "POST", {"user_id": "victim"}, {}, ADMIN_ONLY),
    ("admin.edit_user", "GET", {"user_id": "victim"}, None, ADMIN_ONLY),
    ("admin.edit_user", "POST", {"user_id": "victim"}, {}, ADMIN_ONLY),
    ("admin.send_reset", "POST", {"user_id": "victim"}, {}, ADMIN_ONLY),
    ("admin.invite", "POST", {}, {}, ADMIN_ONLY),
    ("admin.invitation_action", "POST", {"link_id": "invitation", "action": "resend"}, {}, ADMIN_ONLY),
    ("admin.invitation_action", "POST", {"link_id": "invitation", "action": "revoke"}, {}, ADMIN_ONLY),
    ("admin.failed_event", "POST", {"event_id": "event", "action": "retry"}, {}, ADMIN_ONLY),
    ("admin.failed_event", "POST", {"event_id": "event", "action": "discard"}, {}, ADMIN_ONLY),
    ("admin.apps", "GET", {}, None, ADMIN_ONLY),
    ("admin.toggle_mail_archiving", "POST", {}, {"value": "on"}, ADMIN_ONLY),
    ("admin.settings", "GET", {}, None, ADMIN_ONLY),
    ("admin.settings", "POST", {}, {}, ADMIN_ONLY),
    ("admin.system", "GET", {}, None, ADMIN_ONLY),
    ("admin.start_worker_check", "POST", {}, {}, ADMIN_ONLY),
    ("admin.job_status", "GET", {"run_id": "job"}, None, ADMIN_ONLY),
    ("admin.mail_archiving", "GET", {}, None, ADMIN_ONLY),
    ("admin.mail_archiving", "POST", {}, {}, ADMIN_ONLY),
    ("static", "GET", {"filename": "app.css"}, None, PUBLIC),
    # Mail archive: site spaces only (personal: 403 for everyone), space admins manage accounts.
    ("archive.accounts", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("archive.accounts", "GET", {"key": "~viewer"}, None, PERSONAL_SPACE),
    ("archive.new_account", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("archive.new_account", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("archive.new_account", "POST", {"key": "~viewer"}, {}, PERSONAL_SPACE),
    ("archive.edit_account", "GET", {"key": "TEAM", "account_id": "account"}, None, SPACE_ADMIN),
    ("archive.edit_account", "POST", {"key": "TEAM", "account_id": "account"}, {}, SPACE_ADMIN),
    ("archive.edit_account", "GET", {"key": "OTHER", "account_id": "account"}, None, OTHER_SPACES_THING),
    ("archive.remove_account", "GET", {"key": "TEAM", "account_id": "account"}, None, SPACE_ADMIN),
    ("archive.remove_account", "POST", {"key": "TEAM", "account_id": "account"}, {}, SPACE_ADMIN),
    ("archive.remove_account", "POST", {"key": "OTHER", "account_id": "account"}, {}, OTHER_SPACES_THING),
    ("archive.toggle_account", "POST", {"key": "TEAM", "account_id": "account"}, {"value": "on"}, SPACE_ADMIN),
    ("archive.protocol_fields", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("archive.test_connection", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("archive.test_status", "GET", {"key": "TEAM", "run_id": "connection_test"}, None,
     expect(user=403, viewer=403, other_admin=403, sysadmin=404)),  # only its starter sees a test's result
    ("archive.mail", "GET", {"key": "TEAM"}, None, SPACE_VIEW),
    ("archive.mail", "GET", {"key": "~viewer"}, None, PERSONAL_SPACE),
    ("archive.fetch_now", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("archive.fetch_status", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    # Reading the archive: view permission on the message's own space; ids from another space are 404.
    ("archive.message", "GET", {"key": "TEAM", "message_id": "message"}, None, SPACE_VIEW),
    ("archive.message", "GET", {"key": "OTHER", "message_id": "message"}, None, CROSS_SPACE_VIEW),
    ("archive.message_body", "GET", {"key": "TEAM", "message_id": "message"}, None, SPACE_VIEW),
    ("archive.inline_image", "GET", {"key": "TEAM", "message_id": "message", "cid": "logo@example.org"}, None,
     SPACE_VIEW),
    ("archive.attachment", "GET", {"key": "TEAM", "message_id": "message", "index": "attachment"}, None, SPACE_VIEW),
    ("archive.attachment", "GET", {"key": "OTHER", "message_id": "message", "index": "attachment"}, None,
     CROSS_SPACE_VIEW),
    ("archive.source", "GET", {"key": "TEAM", "message_id": "message"}, None, SPACE_VIEW),
    ("archive.eml", "GET", {"key": "TEAM", "message_id": "message"}, None, SPACE_VIEW),
    ("archive.thread", "GET", {"key": "TEAM", "thread_id": "thread"}, None, SPACE_VIEW),
    ("archive.permalink", "GET", {"key": "TEAM", "msgid": "report@example.org"}, None, SPACE_VIEW),
    ("archive.permalink", "GET", {"key": "OTHER", "msgid": "report@example.org"}, None, CROSS_SPACE_VIEW),
    # The feed signs in by its token, never by the session: without one it is 401 for everyone.
    ("archive.feed", "GET", {"key": "TEAM"}, None, expect(*[401] * 6)),
    ("archive.thread", "GET", {"key": "OTHER", "thread_id": "thread"}, None, CROSS_SPACE_VIEW),
    ("archive.export_mbox", "GET", {"key": "TEAM"}, None, SPACE_VIEW),
    ("archive.export_mbox", "GET", {"key": "~viewer"}, None, PERSONAL_SPACE),
    # Trash: space admins and roles with the "delete mail" option.
    ("archive.delete_message", "POST", {"key": "TEAM", "message_id": "message"}, {}, SPACE_ADMIN),
    ("archive.delete_message", "POST", {"key": "OTHER", "message_id": "message"}, {}, OTHER_SPACES_THING),
    ("archive.delete_thread", "POST", {"key": "TEAM", "thread_id": "thread"}, {}, SPACE_ADMIN),
    ("archive.trash_page", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("archive.restore_message", "POST", {"key": "TEAM", "message_id": "trashed"}, {}, SPACE_ADMIN),
    ("archive.restore_message", "POST", {"key": "TEAM", "message_id": "message"}, {},
     expect(user=403, viewer=403, other_admin=403, space_admin=404, sysadmin=404)),  # not in the trash
    ("archive.import_mail", "GET", {"key": "TEAM"}, None, SPACE_ADMIN),
    ("archive.import_mail", "POST", {"key": "TEAM"}, {}, SPACE_ADMIN),
    ("archive.import_status", "GET", {"key": "TEAM", "run_id": "job"}, None,
     expect(user=403, viewer=403, other_admin=403, space_admin=404, sysadmin=404)),  # not an import of TEAM
    ("spaces.set_delete_mail", "POST", {"key": "TEAM", "role_id": "victim_role"}, {"value": "on"}, SPACE_ADMIN),
    # Outgoing mail: system administrators only.
    ("outgoing.mail_servers", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.new_server", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.new_server", "POST", {}, {}, ADMIN_ONLY),
    ("outgoing.edit_server", "GET", {"server_id": "smtp_server"}, None, ADMIN_ONLY),
    ("outgoing.edit_server", "POST", {"server_id": "smtp_server"}, {}, ADMIN_ONLY),
    ("outgoing.remove_server", "GET", {"server_id": "smtp_server"}, None, ADMIN_ONLY),
    ("outgoing.remove_server", "POST", {"server_id": "smtp_server"}, {}, ADMIN_ONLY),
    ("outgoing.make_default", "POST", {"key": "smtp_server"}, {}, ADMIN_ONLY),
    ("outgoing.make_default", "POST", {"key": "config"}, {}, expect(user=403, viewer=403, other_admin=403,
                                                                    space_admin=403, sysadmin=404)),  # none set
    ("outgoing.security_fields", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.from_preview", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.test_email", "GET", {"key": "smtp_server"}, None, ADMIN_ONLY),
    ("outgoing.test_email", "POST", {"key": "smtp_server"}, {}, ADMIN_ONLY),
    ("outgoing.test_status", "GET", {"test_id": "smtp_test"}, None, ADMIN_ONLY),
    ("outgoing.mail_queue", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.flush_queue", "POST", {}, {}, ADMIN_ONLY),
    ("outgoing.error_queue_action", "POST", {}, {"action": "resend", "ids": "outbound_mail"}, ADMIN_ONLY),
    ("outgoing.retry_settings", "POST", {}, {}, ADMIN_ONLY),
    ("outgoing.bounce_settings", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.bounce_settings", "POST", {}, {}, ADMIN_ONLY),
    ("outgoing.remove_suppression", "POST", {}, {"address": "gone@example.org"}, ADMIN_ONLY),
    ("outgoing.bounce_message", "GET", {"bounce_id": "bounce"}, None, ADMIN_ONLY),
    ("outgoing.dkim_keys", "GET", {}, None, ADMIN_ONLY),
    ("outgoing.dkim_keys", "POST", {}, {}, ADMIN_ONLY),
    ("outgoing.dkim_key_action", "POST", {"key_id": "dkim_key", "action": "disable"}, {}, ADMIN_ONLY),
    # Pages and blog posts: view to read and comment, edit to write (no editor among the actors), admin: sensitive.
    ("content.pages", "GET", {"key": "TEAM"}, None, SPACE_VIEW),
    ("content.blog", "GET", {"key": "TEAM"}, None, SPACE_VIEW),
    ("content.new_page", "GET", {"key": "TEAM", "section": "pages"}, None, SPACE_ADMIN),
    ("content.new_page", "POST", {"key": "TEAM", "section": "blog"}, {}, SPACE_ADMIN),
    ("content.page", "GET", {"key": "TEAM", "page_id": "page"}, None, SPACE_VIEW),
    ("content.page", "GET", {"key": "OTHER", "page_id": "page"}, None, CROSS_SPACE_VIEW),
    ("content.edit_page", "GET", {"key": "TEAM", "page_id": "page"}, None, SPACE_ADMIN),
    ("content.edit_page", "POST", {"key": "TEAM", "page_id": "page"}, {}, SPACE_ADMIN),
    ("content.history", "GET", {"key": "TEAM", "page_id": "page"}, None, SPACE_VIEW),
    ("content.page_diff", "GET", {"key": "TEAM", "page_id": "page"}, None, SPACE_VIEW),
    ("content.comment", "POST", {"key": "TEAM", "page_id": "page"}, {}, SPACE_VIEW),
    ("content.set_sensitive", "POST", {"key": "TEAM", "page_id": "page"}, {"value": "on"}, SPACE_ADMIN),
    # Watching: whoever may view; the Watching list is one's own; the unwatch link needs no sign-in.
    ("notify.watch_space", "POST", {"key": "TEAM"}, {"value": "on"}, SPACE_VIEW),
    ("notify.watch_blog", "POST", {"key": "TEAM"}, {"value": "on"}, SPACE_VIEW),
    ("notify.watch_page", "POST", {"key": "TEAM", "page_id": "page"}, {"value": "on"}, SPACE_VIEW),
    ("notify.watch_page", "POST", {"key": "OTHER", "page_id": "page"}, {"value": "on"}, CROSS_SPACE_VIEW),
    ("notify.preferences", "GET", {}, None, SIGNED_IN),
    ("notify.preferences", "POST", {}, {}, SIGNED_IN),
    ("notify.remove_watch", "POST", {"watch_id": "watch"}, {},
     expect(user=404, other_admin=404, space_admin=404, sysadmin=404)),  # the viewer's own watch
    ("notify.reply_mailbox", "GET", {}, None, ADMIN_ONLY),
    ("notify.reply_mailbox", "POST", {}, {}, ADMIN_ONLY),
    ("notify.unwatch", "GET", {"token": "unwatch_token"}, None, PUBLIC),
    ("notify.unwatch", "POST", {"token": "unwatch_token"}, {}, PUBLIC),
    # Sign-in providers: system admins; Connect and its callback: anyone signed in, for their own forms (a bare
    # request names no provider and no state: 400).
    ("oauth.providers_page", "GET", {}, None, ADMIN_ONLY),
    ("oauth.new_provider", "GET", {}, None, ADMIN_ONLY),
    ("oauth.new_provider", "POST", {}, {}, ADMIN_ONLY),
    ("oauth.edit_provider", "GET", {"provider_id": "provider"}, None, ADMIN_ONLY),
    ("oauth.edit_provider", "POST", {"provider_id": "provider"}, {}, ADMIN_ONLY),
    ("oauth.remove", "POST", {"provider_id": "provider"}, {}, ADMIN_ONLY),
    ("oauth.connect", "POST", {}, {}, expect(user=400, viewer=400, other_admin=400, space_admin=400, sysadmin=400)),
    ("oauth.callback", "GET", {}, None, expect(user=400, viewer=400, other_admin=400, space_admin=400,
                                               sysadmin=400)),
]


MESSAGE_WITH_PARTS = (
    b"From: Ann <ann@example.org>\r\nSubject: Report\r\nMessage-ID: <report@example.org>\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>See <img src=\"cid:logo@example.org\"></p>\r\n"
    b"--b\r\nContent-Type: image/png\r\nContent-ID: <logo@example.org>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n\r\n%PDF-1.4\r\n"
    b"--b--\r\n")


def account_data(host, username):
    return AccountData(name=username, description="", protocol="imaps", host=host, port=993, username=username,
                       password="pw", require_starttls=False, folder="INBOX", trusted_ca_pem="", keep_on_server=False)


@pytest.fixture
def world(db, make_user):
    return build_world(db, make_user)


def build_world(db, make_user):
    """TEAM (viewer, space_admin, victim) and OTHER (other_admin) site spaces, and one job run."""
    people = {name: make_user(name) for name in ("user", "viewer", "other_admin", "space_admin", "victim")}
    people["sysadmin"] = make_user("sysadmin", admin=True)
    team = create_site_space(people["space_admin"], "TEAM", "Team")
    other = create_site_space(people["other_admin"], "OTHER", "Other")
    db.session.add(SpaceRole(space=team, user=people["viewer"], role=VIEW))
    victim_role = SpaceRole(space=team, user=people["victim"], role=VIEW)
    db.session.add(victim_role)
    db.session.add(SpaceRole(space=other, user=people["space_admin"], role=VIEW))
    run = JobRun(kind="worker-check")
    db.session.add(run)
    account = create_account(team, account_data("mail.example.org", "team@example.org"))
    create_account(other, account_data("mail.example.net", "other@example.net"))
    test_run = JobRun(kind="connection-test", created_by_id=people["space_admin"].id)
    db.session.add(test_run)
    db.session.flush()
    db.session.add(ConnectionTest(job_run_id=test_run.id, space_id=team.id, settings={}, result={"ok": True}))
    message_id, _ = ingest.store(team.id, None, MESSAGE_WITH_PARTS)
    trashed_id, _ = ingest.store(team.id, None, b"Subject: old\r\nMessage-ID: <old@example.org>\r\n\r\nold\r\n")
    db.session.get(Message, trashed_id).deleted_at = utcnow()
    server = create_server(ServerData("SMTP", "site@example.org", "", "", "smtp.example.org", 587, "starttls", "", "",
                                      30, "none", ""))
    smtp_test_run = JobRun(kind="smtp-test")
    db.session.add(smtp_test_run)
    db.session.flush()
    smtp_test = SmtpTest(job_run_id=smtp_test_run.id, server_key=server.key, to_address="a@example.org", subject="s",
                         body="b", result={"ok": True, "reply": "250 OK", "transcript": []})
    db.session.add(smtp_test)
    mail = queue_mail("reader@example.org", "Hello", "Body")
    page = create_page(team, people["space_admin"], "Runbook", "v1")
    edit_page(page, people["space_admin"], "Runbook", "v2")
    watch = Watch(user_id=people["viewer"].id, scope="page", space_id=team.id, page_id=page.id)
    db.session.add(watch)
    viewer_session = UserSession(user_id=people["viewer"].id, key_hash="0" * 64)
    db.session.add(viewer_session)
    provider = OAuthProvider(name="Provider", kind="generic", client_id="id", scopes="mail",
                             authorization_endpoint="https://idp.example.com/auth",
                             token_endpoint="https://idp.example.com/token")
    db.session.add(provider)
    invitation = AccountLink(kind="invite", token_hash="1" * 64, email="guest@example.org", space_id=team.id,
                             role=VIEW, invited_by_id=people["sysadmin"].id, expires_at=utcnow() + timedelta(days=7))
    db.session.add(invitation)
    bounce = Bounce(sha256="2" * 64, outcome="unmatched", from_header="MAILER-DAEMON", subject="Undelivered",
                    raw=b"Subject: Undelivered\r\n\r\n<script>x</script>\r\n")
    db.session.add(bounce)
    dkim_key = DkimKey(domain="example.org", selector="s", private_key_encrypted="x", public_key="p")
    db.session.add(dkim_key)
    db.session.commit()
    ids = {"victim_role": victim_role.id, "victim": people["victim"].id, "job": run.id, "account": account.id,
           "connection_test": test_run.id, "message": message_id, "attachment": 3,
           "thread": db.session.get(Message, message_id).thread_id, "trashed": trashed_id,
           "smtp_server": server.id, "smtp_test": smtp_test.id, "outbound_mail": mail.id,
           "page": page.id, "watch": watch.id, "unwatch_token": unwatch_token(watch),
           "viewer_session": viewer_session.id, "provider": provider.id, "invitation": invitation.id, "bounce": bounce.id,
           "dkim_key": dkim_key.id, "event": db.session.scalar(db.select(ContentEvent.id).limit(1))}
    return SimpleNamespace(people=people, ids=ids)


@pytest.fixture(scope="module")
def matrix_image(shared_app):
    """The world built once for the module's hundreds of cases, and its image (tests/conftest.py)."""
    with shared_app.app_context():
        built = build_world(db_ext, lambda name, admin=False: shared_make_user(name, admin=admin))
        people = {name: SimpleNamespace(username=user.username, id=user.id) for name, user in built.people.items()}
        image = DatabaseImage(shared_app)
    return SimpleNamespace(people=people, ids=built.ids), image


@pytest.fixture
def matrix(shared_app, matrix_image, redis_server):
    """(app, client, login, world) on the world as it was built: the database put back before each case."""
    world, image = matrix_image
    image.restore()
    Redis.from_url(redis_server).flushall()
    with shared_app.app_context():
        shared_app.test_client_class = Client
        client = shared_app.test_client()

        def login(person):
            response = client.post("/login", data={"login": person.username, "password": PASSWORD})
            assert response.status_code == 302, response.get_data(as_text=True)
            client.csrf_token()
            return client

        yield SimpleNamespace(app=shared_app, client=client, login=login, world=world)
        db_ext.session.remove()


def _url(app, endpoint, kwargs, ids):
    values = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with app.test_request_context():
        from flask import url_for

        return url_for(endpoint, **values)


def _outcome(response) -> object:
    location = response.headers.get("Location", "")
    if response.status_code == 302 and location.startswith("/login"):
        return LOGIN
    if response.status_code in (200, 302, 303):
        return OK
    return response.status_code


CASES = [
    pytest.param(endpoint, method, kwargs, data, actor, wanted[actor],
                 id=f"{method} {endpoint} {'/'.join(map(str, kwargs.values()))} as {actor}")
    for endpoint, method, kwargs, data, wanted in MATRIX
    for actor in ACTORS
]


@pytest.mark.parametrize("endpoint, method, kwargs, data, actor, wanted", CASES)
def test_permission(matrix, endpoint, method, kwargs, data, actor, wanted):
    client, world = matrix.client, matrix.world
    if actor != "anonymous":
        matrix.login(world.people[actor])
    url = _url(matrix.app, endpoint, kwargs, world.ids)
    response = client.get(url) if method == "GET" else client.post(url, data=data)
    body = response.get_data().decode("utf-8", "replace")
    response.close()
    assert _outcome(response) == wanted, body[:400]


def test_every_route_has_a_row(app):
    covered = {(endpoint, method) for endpoint, method, *_ in MATRIX}
    routes = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes - covered == set(), "add these routes to the permission matrix"
    assert covered - routes == set(), "the matrix names routes that no longer exist"


def test_system_admin_administers_every_space_and_owner_their_own(app, world, db):
    from webapp.spaces.access import role_in
    from webapp.spaces.models import Space

    team = db.session.query(Space).filter_by(key="TEAM").one()
    personal = db.session.query(Space).filter_by(key="~viewer").one()
    assert role_in(world.people["sysadmin"], team) == ADMIN
    assert role_in(world.people["viewer"], personal) == ADMIN
    assert role_in(world.people["viewer"], team) == VIEW
    assert role_in(world.people["user"], team) is None
    team.everyone_can_view = True
    assert role_in(world.people["user"], team) == VIEW


def test_each_case_starts_from_the_world_as_built(shared_app, matrix_image):
    """The matrices' cases share one world: a change a case makes (rows, the search index, ids) is undone."""
    from webapp.archive import search
    from webapp.auth.models import User

    world, image = matrix_image
    image.restore()  # (each case restores before it runs: the one before this may have changed anything)
    with shared_app.app_context():
        users = db_ext.session.query(User).count()
        db_ext.session.delete(db_ext.session.get(Message, world.ids["message"]))
        shared_make_user("intruder")
        team_id = db_ext.session.get(Message, world.ids["trashed"]).space_id
        new_id, _ = ingest.store(team_id, None, b"Subject: later\r\n\r\nzebra\r\n")
        db_ext.session.commit()
        assert [h.message_id for h in search.search(team_id, "zebra")] == [new_id]
    image.restore()
    with shared_app.app_context():
        assert db_ext.session.query(User).count() == users
        assert db_ext.session.query(User).filter_by(username="intruder").count() == 0
        assert db_ext.session.get(Message, world.ids["message"]) is not None
        assert search.search(team_id, "zebra") == []
        again, _ = ingest.store(team_id, None, b"Subject: later\r\n\r\nzebra\r\n")
        db_ext.session.commit()
        assert again == new_id  # the id sequence went back too
    image.restore()
