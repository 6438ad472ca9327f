"""Mail accounts: create, edit, remove, enable; Test Connection; queueing fetches. Called by routes and workers."""
from dataclasses import asdict, dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from webapp.archive.connect import MailboxSettings
from webapp.archive.models import DEFAULT_PORTS, ConnectionTest, FetchRun, MailAccount, Message
from webapp.extensions import db
from webapp.jobs import JobRun, enqueue_after_commit, start_job
from webapp.security import secret_box
from webapp.settings import SiteSettings
from webapp.spaces.models import SITE, Space
from webapp.timeutil import utcnow

ACTIVE = ("queued", "running")
FAILURE_WARNING_AFTER = 3


class ArchiveError(Exception):
    """A problem the user can fix; its text is shown as is."""


@dataclass
class AccountData:
    name: str
    description: str
    protocol: str
    host: str
    port: int
    username: str
    password: str  # "" on edit means "keep the stored one"
    require_starttls: bool
    folder: str
    trusted_ca_pem: str
    keep_on_server: bool

    def connection_fields(self) -> tuple:
        return (self.protocol, self.host.lower(), self.port, self.username)


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


def _apply(account: MailAccount, data: AccountData) -> None:
    account.name, account.description = data.name, data.description
    account.protocol, account.host, account.port = data.protocol, data.host.lower(), data.port
    account.username, account.folder = data.username, data.folder or "INBOX"
    account.require_starttls = data.require_starttls if data.protocol in ("pop", "imap") else False
    account.trusted_ca_pem = data.trusted_ca_pem or None
    account.keep_on_server = data.keep_on_server
    if data.password:
        account.password_encrypted = secret_box().encrypt(data.password)


def create_account(space: Space, data: AccountData) -> MailAccount:
    require_site_space(space)
    if _name_taken(space, data.name):
        raise ArchiveError("This space already has a mail account with that name.")
    if not data.password:
        raise ArchiveError("Enter the mailbox password.")
    account = MailAccount(space_id=space.id)
    _apply(account, data)
    db.session.add(account)
    db.session.flush()
    return account


def update_account(account: MailAccount, data: AccountData) -> None:
    space = db.session.get(Space, account.space_id)
    if _name_taken(space, data.name, account.id):
        raise ArchiveError("This space already has a mail account with that name.")
    changed = data.connection_fields() != (account.protocol, account.host, account.port, account.username)
    if changed and not data.password:
        raise ArchiveError("You changed where or as whom to sign in: enter the password again.")
    if changed:
        account.imap_uidvalidity = None
    _apply(account, data)


def remove_account(account: MailAccount) -> None:
    """The account goes; the mail it archived stays in the space."""
    db.session.delete(account)


def set_enabled(account: MailAccount, enabled: bool) -> None:
    account.enabled = enabled


def mailbox_settings(account: MailAccount) -> MailboxSettings:
    return MailboxSettings(
        protocol=account.protocol, host=account.host, port=account.port, username=account.username,
        password=secret_box().decrypt(account.password_encrypted), require_starttls=account.require_starttls,
        folder=account.folder, trusted_ca_pem=account.trusted_ca_pem,
        timeout=current_app.config["MAIL_TIMEOUT_SECONDS"],
    )


def start_connection_test(space: Space, data: AccountData, user, account: MailAccount | None = None) -> JobRun:
    """Queue a test of the form's values without saving them; the password goes encrypted, never as an argument."""
    require_site_space(space)
    password = data.password
    if not password and account is not None:
        if data.connection_fields() != (account.protocol, account.host, account.port, account.username):
            raise ArchiveError("You changed where or as whom to sign in: enter the password again.")
        password = secret_box().decrypt(account.password_encrypted)
    if not password:
        raise ArchiveError("Enter the mailbox password to test the connection.")
    from workers.fetch import test_connection

    run = start_job("connection-test", test_connection, user=user)
    settings = {k: v for k, v in asdict(data).items() if k not in ("password", "trusted_ca_pem")}
    db.session.add(ConnectionTest(job_run_id=run.id, space_id=space.id, settings=settings,
                                  password_encrypted=secret_box().encrypt(password),
                                  trusted_ca_pem=data.trusted_ca_pem or None))
    return run


def connection_test_for(run: JobRun) -> ConnectionTest | None:
    return db.session.scalar(select(ConnectionTest).where(ConnectionTest.job_run_id == run.id))


def queue_account_fetch(account: MailAccount, trigger: str) -> FetchRun:
    """A fetch of `account`, or the one already queued or running: never two at once."""
    active = db.session.scalar(select(FetchRun).where(FetchRun.account_id == account.id, FetchRun.state.in_(ACTIVE))
                               .order_by(FetchRun.id.desc()).limit(1))
    if active is not None:
        return active
    run = FetchRun(account_id=account.id, trigger=trigger)
    db.session.add(run)
    db.session.flush()
    from workers.fetch import fetch_account

    enqueue_after_commit(fetch_account, run.id, job_id=f"fetch-run-{run.id}",
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
    due = db.session.scalars(select(MailAccount).join(Space, Space.id == MailAccount.space_id).where(
        MailAccount.enabled.is_(True), Space.kind == SITE, MailAccount.id.not_in(recent)))
    runs = [queue_account_fetch(account, "schedule") for account in due]
    db.session.commit()
    return len(runs)


def settle_abandoned_runs() -> None:
    """Runs whose worker died (its lease ran out) are marked failed so the next fetch can start."""
    now = utcnow()
    lease = timedelta(seconds=current_app.config["FETCH_LEASE_SECONDS"])
    for run in db.session.scalars(select(FetchRun).where(FetchRun.state.in_(ACTIVE))):
        account = run.account
        held = account.lease_until is not None and account.lease_until > now
        stale_queue = run.state == "queued" and run.created_at < now - 2 * lease - timedelta(minutes=10)
        if (run.state == "running" and not held) or stale_queue:
            run.state, run.finished_at = "failed", now
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
    """Messages in the space's archive (the trash not counted). Counting costs ~60 ns a message (12 ms at
    200,000), so the count is kept per process until the archive's stamp changes."""
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
