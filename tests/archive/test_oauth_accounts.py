"""Mail accounts that sign in with a provider (OAuth 2.0): Connect through the real authorization server, Test
Connection and fetches over real Dovecot validating the tokens, tokens renewed mid-fetch, revocation mid-fetch."""
import contextlib
import time

import pytest
from sqlalchemy import func, select

from tests.archive.helpers import PORT_OF, message
from tests.archive.test_fetch import fetch_once
from tests.oauth_helpers import connect, mailbox_address, make_provider
from webapp.archive import fetching
from webapp.archive.models import FetchRun, MailAccount, Message
from webapp.extensions import db
from webapp.oauth.models import GRANT_OK, GRANT_RECONNECT, OAuthGrant
from webapp.outgoing.models import OutboundMail
from webapp.security import secret_box
from webapp.spaces.services import create_site_space


@pytest.fixture
def team(app, make_user, login, oauth_server):
    admin = make_user("teamadmin")
    space = create_site_space(admin, "TEAM", "Team")
    db.session.commit()
    provider = make_provider(app, oauth_server)
    login(admin)
    return admin, space, provider


def account_form(dovecot, provider, username, protocol="imaps", **overrides):
    form = {"name": f"{protocol} box", "description": "", "protocol": protocol, "host": "localhost",
            "port": str(dovecot.ports[PORT_OF[protocol]]), "username": username, "password": "",
            "folder": "INBOX", "trusted_ca_pem": dovecot.ca.cert_pem, "auth_method": f"oauth:{provider.id}",
            "return_to": "/spaces/TEAM/mail-accounts/new"}
    if protocol in ("imap", "pop"):
        form["require_starttls"] = "y"
    form.update(overrides)
    return form


@contextlib.contextmanager
def after_batch(number: int, action):
    """Run `action` when the fetch has downloaded and stored its `number`th batch, before that is committed."""
    real = fetching._store_batch
    count = 0

    def store(*args, **kwargs):
        nonlocal count
        stored = real(*args, **kwargs)
        count += 1
        if count == number:
            action()
        return stored

    fetching._store_batch = store
    try:
        yield
    finally:
        fetching._store_batch = real


def connected_account(client, dovecot, provider, protocol="imaps") -> tuple[MailAccount, str]:
    """Through the web: Connect, consent, come back, save. (account, mailbox username on Dovecot)."""
    user, _ = dovecot.add_user()
    form = account_form(dovecot, provider, "", protocol)
    ticket = connect(client, form, mailbox_address(user))
    page = client.get(f"/spaces/TEAM/mail-accounts/new?oauth={ticket}").get_data(as_text=True)
    assert f"Connected as <strong>{mailbox_address(user)}</strong>" in page
    assert f'value="{mailbox_address(user)}"' in page  # the username, filled in from the sign-in
    assert f'value="{form["port"]}"' in page  # what was typed before Connect is back
    saved = client.post("/spaces/TEAM/mail-accounts/new",
                        data=dict(form, username=mailbox_address(user), oauth_ticket=ticket))
    assert saved.status_code == 302, saved.get_data(as_text=True)
    return db.session.scalar(select(MailAccount).order_by(MailAccount.id.desc())), user


@pytest.mark.parametrize("protocol", ["imaps", "imap", "pops", "pop"])
def test_connect_test_and_fetch_with_a_provider(team, client, oauth_dovecot, oauth_server, run_jobs, protocol):
    _, space, provider = team
    account, user = connected_account(client, oauth_dovecot, provider, protocol)
    assert account.auth_method == f"oauth:{provider.id}" and account.password_encrypted is None
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    assert grant.address == mailbox_address(user) and grant.status == GRANT_OK
    assert oauth_server.token_requests[-1] == {"grant_type": "authorization_code", "code_verifier": True}  # PKCE

    tested = client.htmx_post("/spaces/TEAM/mail-accounts/test",
                              data=dict(account_form(oauth_dovecot, provider, mailbox_address(user), protocol),
                                        account_id=account.id))
    assert tested.status_code == 200
    run_jobs()
    run_id = int(tested.get_data(as_text=True).split("/mail-accounts/tests/")[1].split('"')[0])
    result = client.htmx_get(f"/spaces/TEAM/mail-accounts/tests/{run_id}").get_data(as_text=True)
    assert "Connection works." in result, result

    oauth_dovecot.deliver(user, [message(i) for i in range(5)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.error_message, run.fetched, run.deleted) == ("done", None, 5, 5)
    assert oauth_dovecot.mailbox_files(user) == []
    log = (oauth_dovecot.root / "dovecot.log").read_text()
    assert f"user=<{mailbox_address(user)}>, method=OAUTHBEARER" in log  # the standard mechanism, as advertised


def test_tokens_never_reach_pages_or_logs(team, client, oauth_dovecot, oauth_server, run_jobs, caplog):
    _, _, provider = team
    account, user = connected_account(client, oauth_dovecot, provider)
    pages = "".join(client.get(url).get_data(as_text=True) for url in (
        f"/spaces/TEAM/mail-accounts/{account.id}/edit", "/spaces/TEAM/mail-accounts"))
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    secrets = [secret_box().decrypt(grant.access_token_encrypted), secret_box().decrypt(grant.refresh_token_encrypted)]
    assert "Connected as" in pages
    fetch_once(account, run_jobs)
    for secret in secrets:
        assert secret not in pages and secret not in caplog.text
        assert secret not in str(db.session.execute(select(FetchRun.error_message)).all())


def test_a_long_fetch_renews_short_lived_tokens_and_loses_nothing(app, team, client, oauth_dovecot, oauth_server,
                                                                  run_jobs):
    """2,000 messages over POP3S in batches of 100, access tokens living 2 s: each session signs in with a token
    renewed by the worker; every message archived once, the server emptied."""
    _, space, provider = team
    app.config.update(FETCH_BATCH_SIZE=100, OAUTH_REFRESH_AHEAD_SECONDS=1)
    oauth_server.access_ttl = 2
    try:
        account, user = connected_account(client, oauth_dovecot, provider, "pops")
        oauth_dovecot.deliver(user, [message(i) for i in range(2000)])
        time.sleep(2)  # the first token has expired before the fetch starts
        run = fetch_once(account, run_jobs)
    finally:
        oauth_server.access_ttl = 3600
    assert (run.state, run.error_message) == ("done", None)
    assert (run.fetched, run.deleted) == (2000, 2000)
    assert db.session.scalar(select(func.count(Message.id)).where(Message.space_id == space.id)) == 2000
    assert oauth_dovecot.mailbox_files(user) == []
    refreshes = [r for r in oauth_server.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) >= 2  # renewed more than once during the fetch
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    newest = secret_box().decrypt(grant.refresh_token_encrypted)
    assert oauth_server.active_refresh_tokens(mailbox_address(user)) == [newest]  # the rotated one was kept


def test_revoked_mid_fetch_needs_reconnect_then_finishes(app, team, client, oauth_dovecot, oauth_server, run_jobs,
                                                         make_user):
    """The person withdraws access while the fetch runs: what was committed stays, nothing doubles, the account
    says "Reconnect needed" (page and one mail to the space admins), fetching stops; Connect again, and the next
    fetch finishes the job."""
    admin, space, provider = team
    app.config.update(FETCH_BATCH_SIZE=100, OAUTH_REFRESH_AHEAD_SECONDS=1)
    oauth_server.access_ttl = 2
    try:
        account, user = connected_account(client, oauth_dovecot, provider, "pops")
        oauth_dovecot.deliver(user, [message(i) for i in range(600)])

        def revoke():
            oauth_server.revoke_user(mailbox_address(user))
            time.sleep(2.1)  # the current access token runs out too

        with after_batch(2, revoke):
            run = fetch_once(account, run_jobs)
    finally:
        oauth_server.access_ttl = 3600
    assert run.state == "failed" and run.error_class == "reconnect_needed", run.error_message
    archived = db.session.scalar(select(func.count(Message.id)).where(Message.space_id == space.id))
    assert archived == 200 and len(oauth_dovecot.mailbox_files(user)) == 400
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    assert grant.status == GRANT_RECONNECT
    page = client.get("/spaces/TEAM/mail-accounts").get_data(as_text=True)
    assert "Reconnect needed" in page
    notices = db.session.scalars(select(OutboundMail).where(OutboundMail.subject.like("Reconnect needed%"))).all()
    assert [m.recipient for m in notices] == [admin.email]
    assert f"/spaces/TEAM/mail-accounts/{account.id}/edit" in notices[0].body_text

    # No retry storm: the schedule skips it, and a second refusal sends no second mail.
    from webapp.archive.services import queue_due_fetches

    db.session.execute(FetchRun.__table__.delete())
    db.session.commit()
    assert queue_due_fetches() == 0

    edit = f"/spaces/TEAM/mail-accounts/{account.id}/edit"
    form = account_form(oauth_dovecot, provider, mailbox_address(user), "pops", return_to=edit,
                        name=account.name)
    ticket = connect(client, form, mailbox_address(user))
    assert client.post(edit, data=dict(form, oauth_ticket=ticket)).status_code == 302
    db.session.expire_all()
    assert db.session.get(MailAccount, account.id).oauth_grant_id != grant.id
    run = fetch_once(db.session.get(MailAccount, account.id), run_jobs)
    assert (run.state, run.fetched, run.duplicates) == ("done", 400, 0)
    assert db.session.scalar(select(func.count(Message.id)).where(Message.space_id == space.id)) == 600
    assert oauth_dovecot.mailbox_files(user) == []
    assert "Reconnect needed" not in client.get("/spaces/TEAM/mail-accounts").get_data(as_text=True)


def test_two_workers_refreshing_at_once_keep_the_newest_token(app, team, client, oauth_dovecot, oauth_server):
    """Both find the token expiring; one refreshes under the lease, the other waits and takes its token. The
    provider rotates refresh tokens, so a second refresh with the old one would fail: it must not happen."""
    import threading

    from webapp.oauth.tokens import access_token

    _, _, provider = team
    account, user = connected_account(client, oauth_dovecot, provider)
    grant_id = account.oauth_grant_id
    db.session.get(OAuthGrant, grant_id).access_expires_at = None  # due now
    db.session.commit()
    before = len([r for r in oauth_server.token_requests if r["grant_type"] == "refresh_token"])
    tokens, errors = [], []

    def worker():
        with app.app_context():
            try:
                tokens.append(access_token(grant_id))
            except Exception as exc:  # noqa: BLE001 (the test reports it)
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(tokens) == 2 and tokens[0] == tokens[1]
    after = len([r for r in oauth_server.token_requests if r["grant_type"] == "refresh_token"])
    assert after - before == 1
    db.session.expire_all()
    grant = db.session.get(OAuthGrant, grant_id)
    assert grant.status == GRANT_OK and grant.lease_owner is None
    assert oauth_server.active_refresh_tokens(mailbox_address(user)) == [
        secret_box().decrypt(grant.refresh_token_encrypted)]


def test_a_worker_that_takes_the_lease_after_another_refreshed_gives_it_back(app, team, client, oauth_dovecot,
                                                                           oauth_server):
    """The waiting worker of the test above may take the lease just after the refresher let it go, find the token
    fresh and use it: it must let go of the lease too (it kept it until the lease ran out, holding up the next
    refresh; the test above failed on it now and then)."""
    from webapp.oauth.tokens import refresh

    _, _, provider = team
    account, _user = connected_account(client, oauth_dovecot, provider)
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    before = len(oauth_server.token_requests)
    assert refresh(grant)  # fresh already: nothing asked of the provider
    assert len(oauth_server.token_requests) == before
    db.session.expire_all()
    assert db.session.get(OAuthGrant, grant.id).lease_owner is None


@pytest.mark.parametrize("protocol", ["imaps", "pops"])
def test_xoauth2_when_that_is_all_the_server_offers(team, client, oauth_dovecot_xoauth2, run_jobs, protocol):
    _, _, provider = team
    account, user = connected_account(client, oauth_dovecot_xoauth2, provider, protocol)
    oauth_dovecot_xoauth2.deliver(user, [message(1)])
    run = fetch_once(account, run_jobs)
    assert (run.state, run.error_message, run.fetched) == ("done", None, 1)
    log = (oauth_dovecot_xoauth2.root / "dovecot.log").read_text()
    assert f"user=<{mailbox_address(user)}>, method=XOAUTH2" in log


def test_a_token_for_another_mailbox_is_refused_with_a_clear_message(team, client, oauth_dovecot, run_jobs):
    _, _, provider = team
    account, _ = connected_account(client, oauth_dovecot, provider)
    other, _ = oauth_dovecot.add_user()
    account.username = mailbox_address(other)  # as if edited in the database: the server must refuse the token
    db.session.commit()
    run = fetch_once(account, run_jobs)
    assert run.state == "failed" and run.error_class == "token_refused"
    assert "refused the access token" in run.error_message


def test_app_only_access_opens_only_the_listed_shared_mailbox(app, team, client, oauth_dovecot, oauth_server,
                                                              run_jobs):
    """Microsoft's client credentials: no one signs in; the provider lists the one mailbox it may open."""
    _, space, provider = team
    shared, _ = oauth_dovecot.add_user()
    provider.app_mailboxes, provider.app_scope = mailbox_address(shared), "https://mail.test/.default"
    db.session.commit()
    oauth_server.app_mailbox = mailbox_address(shared)
    try:
        form = account_form(oauth_dovecot, provider, "someone@mail.test", auth_method=f"app:{provider.id}")
        refused = client.post("/spaces/TEAM/mail-accounts/new", data=form)
        assert "may open only the mailboxes" in refused.get_data(as_text=True)
        saved = client.post("/spaces/TEAM/mail-accounts/new", data=dict(form, username=mailbox_address(shared)))
        assert saved.status_code == 302, saved.get_data(as_text=True)
        account = db.session.scalar(select(MailAccount))
        oauth_dovecot.deliver(shared, [message(i) for i in range(3)])
        run = fetch_once(account, run_jobs)
    finally:
        oauth_server.app_mailbox = ""
    assert (run.state, run.error_message, run.fetched) == ("done", None, 3)
    assert oauth_server.token_requests[-1]["grant_type"] == "client_credentials"
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    assert grant.kind == "app" and grant.refresh_token_encrypted is None


def test_workers_renew_tokens_before_they_expire(app, team, client, oauth_dovecot, oauth_server, run_jobs):
    from datetime import timedelta

    from webapp.timeutil import utcnow
    from workers.oauth import refresh_tokens

    _, _, provider = team
    account, _ = connected_account(client, oauth_dovecot, provider)
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    old = grant.access_token_encrypted
    grant.access_expires_at = utcnow() + timedelta(seconds=60)  # within twice the lead time (300 s)
    db.session.commit()
    refresh_tokens()
    db.session.expire_all()
    grant = db.session.get(OAuthGrant, account.oauth_grant_id)
    assert grant.access_token_encrypted != old and grant.access_expires_at > utcnow() + timedelta(minutes=30)


def test_a_session_the_server_ends_mid_fetch_is_signed_in_again_and_nothing_is_lost(
        app, team, client, oauth_dovecot, run_jobs):
    """IMAP keeps one session for the whole fetch; when the server drops it (Microsoft does when the token runs
    out), the worker signs in again with a current token and goes on from the last commit."""
    _, space, provider = team
    app.config.update(FETCH_BATCH_SIZE=100)
    account, user = connected_account(client, oauth_dovecot, provider, "imaps")
    oauth_dovecot.deliver(user, [message(i) for i in range(300)])
    with after_batch(1, lambda: oauth_dovecot.end_sessions(mailbox_address(user)) == 1 or pytest.fail("no session")):
        run = fetch_once(account, run_jobs)
    assert (run.state, run.error_message) == ("done", None)
    assert db.session.scalar(select(func.count(Message.id)).where(Message.space_id == space.id)) == 300
    assert oauth_dovecot.mailbox_files(user) == []
    log = (oauth_dovecot.root / "dovecot.log").read_text()
    assert log.count(f"Login: user=<{mailbox_address(user)}>") == 2
