"""Mail accounts: create, edit, remove, enable; Test Connection; queueing fetches. Called by routes and workers."""
import logging
from dataclasses import dataclass, fields
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from webapp.archive.mailbox import probe
from webapp.archive.models import (
    DEFAULT_PORTS, RUN_ACTIVE, RUN_FAILED, RUN_QUEUED, RUN_RUNNING, ConnectionTest, FetchRun, MailAccount, Message,
)
from webapp.errors import UserError
from webapp.extensions import db
from webapp.jobs import FETCH_ACCOUNT, TEST_CONNECTION, JobRun, enqueue_after_commit, start_job
from webapp.mailnet import PASSWORD, ConnectionData, Endpoint, MailboxError, auth_kind, settings_for
from webapp.oauth.credentials import SignInChoiceError, resolve_mailbox
from webapp.oauth.models import GRANT_RECONNECT, OAuthGrant
from webapp.oauth.tokens import access_token
from webapp.security import secret_box
from webapp.settings import SiteSettings
from webapp.spaces.models import SITE, Space
from webapp.timeutil import utcnow

FAILURE_WARNING_AFTER = 3
log = logging.getLogger(__name__)


class ArchiveError(UserError):
    """A mail account or archive problem the user can fix."""


@dataclass
class AccountData(ConnectionData):
    name: str = ""
    description: str = ""
    keep_on_server: bool = False

    def connection(self) -> dict:
        """The connection fields alone, as a Test Connection stores them (without the password or ticket)."""
        return {f.name: getattr(self, f.name) for f in fields(ConnectionData)
                if f.name not in ("password", "oauth_ticket")}


def archiving_enabled() -> bool:
    return SiteSettings.get().mail_archiving_enabled


def require_site_space(space: Space) -> None:
    if space.kind != SITE:
        raise ArchiveError("Only site spaces can hold a mail archive.")


def accounts_of(space: Space) -> list[MailAccount]:
    return list(db.session.scalars(select(MailAccount).where(MailAccount.space_id == space.id).order_by(MailAccount.name)))


def latest_runs(accounts: list[MailAccount]) -> dict[int, FetchRun]:
    """The newest FetchRun of each account, in one query."""
    if not accounts:
        return {}
    newest = (select(func.max(FetchRun.id)).where(FetchRun.account_id.in_([a.id for a in accounts]))
              .group_by(FetchRun.account_id))
    return {run.account_id: run for run in db.session.scalars(select(FetchRun).where(FetchRun.id.in_(newest)))}


def _name_taken(space: Space, name: str, except_id: int | None = None) -> bool:
    query = select(MailAccount.id).where(MailAccount.space_id == space.id, func.lower(MailAccount.name) == name.lower())
    if except_id:
        query = query.where(MailAccount.id != except_id)
    return db.session.scalar(query) is not None


def _apply(account: MailAccount, data: AccountData, grant_id: int | None) -> None:
    account.name, account.description = data.name, data.description
    account.keep_on_server = data.keep_on_server
    account.apply_connection(data, grant_id)


def grant_for(data: ConnectionData, user, stored_grant_id: int | None = None) -> int | None:
    """The provider's grant the form's values sign in with (webapp/oauth), or None for a password or to keep it."""
    try:
        return resolve_mailbox(data, user, stored_grant_id)
    except SignInChoiceError as exc:
        raise ArchiveError(str(exc)) from None


def check_secret(stored: Endpoint | None, data: AccountData, has_stored_secret: bool) -> None:
    """The password must be typed again for any endpoint it was not entered for (the one rule, mailnet)."""
    problem = data.secret_problem(stored, has_stored_secret)
    if problem:
        raise ArchiveError(problem)


def create_account(space: Space, data: AccountData, user=None) -> MailAccount:
    require_site_space(space)
    if _name_taken(space, data.name):
        raise ArchiveError("This space already has a mail account with that name.")
    check_secret(None, data, False)
    account = MailAccount(space_id=space.id)
    _apply(account, data, grant_for(data, user))
    db.session.add(account)
    db.session.flush()
    return account


def update_account(account: MailAccount, data: AccountData, user=None) -> None:
    space = db.session.get(Space, account.space_id)
    if _name_taken(space, data.name, account.id):
        raise ArchiveError("This space already has a mail account with that name.")
    check_secret(account.endpoint, data, account.has_stored_secret)
    grant_id = grant_for(data, user, account.oauth_grant_id)
    if account.endpoint != data.endpoint:
        account.imap_uidvalidity = None
    _apply(account, data, grant_id)


def remove_account(account: MailAccount) -> None:
    """The account goes; the mail it archived stays in the space."""
    db.session.delete(account)


def set_enabled(account: MailAccount, enabled: bool) -> None:
    account.enabled = enabled


def start_connection_test(space: Space, data: AccountData, user, account: MailAccount | None = None) -> JobRun:
    """Queue a test of the form's values without saving them; the password goes encrypted, never as an argument."""
    require_site_space(space)
    stored = account.endpoint if account is not None else None
    check_secret(stored, data, account is not None and account.has_stored_secret)
    settings = {k: v for k, v in data.connection().items() if k != "trusted_ca_pem"}
    password = None
    if auth_kind(data.auth_method) == PASSWORD:
        password = secret_box().encrypt(data.password or secret_box().decrypt(account.password_encrypted))
    else:  # the grant is named, never a token: the worker gets a current one
        stored_grant = account.oauth_grant_id if account is not None else None
        settings["oauth_grant_id"] = grant_for(data, user, stored_grant) or stored_grant
    run = start_job("connection-test", TEST_CONNECTION, user=user)
    db.session.add(ConnectionTest(job_run_id=run.id, space_id=space.id, settings=settings,
                                  password_encrypted=password, trusted_ca_pem=data.trusted_ca_pem or None))
    return run


def connection_test_for(run: JobRun) -> ConnectionTest | None:
    return db.session.scalar(select(ConnectionTest).where(ConnectionTest.job_run_id == run.id))


def run_connection_test(run: JobRun) -> None:
    """Sign in with the form's values and keep what the server offered, or the one cause of failure; the form's
    password is wiped whatever happens."""
    test = connection_test_for(run)
    values = ConnectionData.from_stored(test.settings, test.trusted_ca_pem)
    try:
        secret = (secret_box().decrypt(test.password_encrypted) if auth_kind(values.auth_method) == PASSWORD
                  else access_token(test.settings.get("oauth_grant_id")))
        info = probe(settings_for(values, secret, timeout=15))
        test.result = {"ok": True, "tls_version": info.tls_version,
                       "capabilities": info.capabilities[:500], "message_count": info.message_count,
                       "removal": info.removal, "offers_starttls": info.offers_starttls}
    except MailboxError as exc:
        test.result = {"ok": False, "kind": exc.kind, "message": exc.message}
    except Exception:
        log.exception("connection test %s failed", run.id)
        test.result = {"ok": False, "kind": "internal",
                       "message": "The test failed unexpectedly; the worker log has the details."}
    finally:
        test.password_encrypted = None
    run.done_count = run.total = 1


def queue_account_fetch(account: MailAccount, trigger: str) -> FetchRun:
    """A fetch of `account`, or the one already queued or running: never two at once. A running one whose worker
    died (its lease ran out) is settled here and a new one starts, without waiting for the scheduler's sweep."""
    active = db.session.scalar(select(FetchRun).where(FetchRun.account_id == account.id, FetchRun.state.in_(RUN_ACTIVE))
                               .order_by(FetchRun.id.desc()).limit(1))
    if active is not None and _abandoned(active, utcnow()):
        if _lock_now(active):
            _settle_abandoned(active, utcnow())
        active = None  # else its dead worker's session still holds the row: the sweep settles it later
    if active is not None:
        return active
    run = FetchRun(account_id=account.id, trigger=trigger)
    db.session.add(run)
    db.session.flush()
    enqueue_after_commit(FETCH_ACCOUNT, run.id, job_id=f"fetch-run-{run.id}",
                         job_timeout=current_app.config["FETCH_JOB_TIMEOUT"])
    return run


def queue_space_fetch(space: Space) -> list[FetchRun]:
    require_site_space(space)
    return [queue_account_fetch(a, "manual") for a in accounts_of(space) if a.enabled]


def queue_due_fetches() -> int:
    """Every enabled account of every site space whose last fetch began an interval ago or more."""
    if not archiving_enabled():
        return 0
    since = utcnow() - timedelta(minutes=SiteSettings.get().fetch_interval_minutes)
    recent = select(FetchRun.account_id).where(FetchRun.created_at >= since)
    # An account whose provider sign-in needs reconnecting waits for a person: no fetch (and no failure) each time.
    waiting = select(OAuthGrant.id).where(OAuthGrant.status == GRANT_RECONNECT)
    due = db.session.scalars(select(MailAccount).join(Space, Space.id == MailAccount.space_id).where(
        MailAccount.enabled.is_(True), Space.kind == SITE, MailAccount.id.not_in(recent),
        (MailAccount.oauth_grant_id.is_(None)) | MailAccount.oauth_grant_id.not_in(waiting)))
    runs = [queue_account_fetch(account, "schedule") for account in due]
    db.session.commit()
    return len(runs)


def settle_abandoned_runs() -> None:
    """Runs whose worker died (its lease ran out) are marked failed so the next fetch can start."""
    now = utcnow()
    # Rows still locked by a dead host's session (until PostgreSQL notices it gone, config.POSTGRES_SESSION_OPTIONS)
    # are skipped, to be settled at a later sweep, rather than holding this worker up.
    for run in db.session.scalars(select(FetchRun).where(FetchRun.state.in_(RUN_ACTIVE))
                                  .with_for_update(skip_locked=True)):
        if _abandoned(run, now):
            _settle_abandoned(run, now)


def _lock_now(run: FetchRun) -> bool:
    """Lock the run's row unless another session holds it (PostgreSQL: NOWAIT; SQLite has one writer anyway)."""
    try:
        with db.session.begin_nested():
            db.session.execute(select(FetchRun.id).where(FetchRun.id == run.id).with_for_update(nowait=True))
        return True
    except OperationalError:
        return False


def _abandoned(run: FetchRun, now) -> bool:
    lease = timedelta(seconds=current_app.config["FETCH_LEASE_SECONDS"])
    account = run.account
    held = account.lease_until is not None and account.lease_until > now
    stale_queue = run.state == RUN_QUEUED and run.created_at < now - 2 * lease - timedelta(minutes=10)
    return (run.state == RUN_RUNNING and not held) or stale_queue


def _settle_abandoned(run: FetchRun, now) -> None:
    run.state, run.finished_at = RUN_FAILED, now
    run.error_class = "abandoned"
    run.error_message = "The fetch stopped before it finished (a worker stopped); the next fetch resumes it."


def forget_connection_tests() -> None:
    """A test's password is wiped when it runs; wipe it anyway if its job was lost, and drop old tests."""
    now = utcnow()
    stale = select(JobRun.id).where(JobRun.created_at < now - timedelta(minutes=15))
    for test in db.session.scalars(select(ConnectionTest).where(ConnectionTest.job_run_id.in_(stale),
                                                                ConnectionTest.password_encrypted.is_not(None))):
        test.password_encrypted = None
    old = db.session.scalars(select(JobRun).where(JobRun.kind == "connection-test",
                                                  JobRun.created_at < now - timedelta(days=1)))
    for run in old:
        db.session.delete(run)  # its ConnectionTest goes with it (ON DELETE CASCADE)


_COUNTS: dict[tuple, tuple[tuple, int]] = {}  # (space, created) -> (archive stamp, with its database; count)


def archive_stamp() -> tuple:
    """What changes whenever any space's listing can: the newest message id (mail stored anywhere), and how many
    are in any trash and when the last went there (trashed, restored, purged)."""
    trash = select(func.count(Message.deleted_at), func.max(Message.deleted_at)).where(
        Message.deleted_at.is_not(None)).subquery()
    return (str(db.engine.url), *db.session.execute(select(select(func.max(Message.id)).scalar_subquery(), trash)).one())


def message_count(space: Space, stamp: tuple | None = None) -> int:
    """Messages in the space's archive (the trash not counted). Counting grows with the archive (docs/benchmarks.md,
    B5), so the count is kept per process until the archive's stamp changes."""
    stamp = stamp or archive_stamp()
    key = (space.id, space.created_at)
    cached = _COUNTS.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    count = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.space_id == space.id, Message.deleted_at.is_(None)))
    _COUNTS[key] = (stamp, count)
    return count


def recent_messages(space: Space, limit: int = 50) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.space_id == space.id)
                                   .order_by(Message.date.desc(), Message.id.desc()).limit(limit)))


def default_port(protocol: str) -> int:
    return DEFAULT_PORTS.get(protocol, 993)
