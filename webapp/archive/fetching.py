"""One fetch of one account: lease, list, download in batches, commit, then delete. DESIGN.md §2."""
import logging
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import insert, or_, select, update

from webapp.archive import ingest
from webapp.archive.mailbox import open_session
from webapp.archive.models import (
    RUN_DONE, RUN_FAILED, RUN_RUNNING, RUN_SKIPPED, FetchRun, MailAccount, SeenMessage,
)
from webapp.archive.services import archiving_enabled
from webapp.extensions import db
from webapp.mailnet import PASSWORD, MailboxError, auth_kind
from webapp.oauth.credentials import mailbox_settings
from webapp.oauth.models import OAuthGrant
from webapp.oauth.tokens import refresh
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)


def take_lease(account_id: int, owner: str) -> bool:
    """Atomically claim the account for `owner` unless a live lease is held by someone else."""
    now = utcnow()
    until = now + timedelta(seconds=current_app.config["FETCH_LEASE_SECONDS"])
    taken = db.session.execute(update(MailAccount).where(
        MailAccount.id == account_id,
        or_(MailAccount.lease_until.is_(None), MailAccount.lease_until < now, MailAccount.lease_owner == owner),
    ).values(lease_owner=owner, lease_until=until)).rowcount
    db.session.commit()
    return taken == 1


def renew_lease(account_id: int, owner: str) -> bool:
    """Extend our lease in the caller's transaction; False when another worker took the account meanwhile."""
    until = utcnow() + timedelta(seconds=current_app.config["FETCH_LEASE_SECONDS"])
    return db.session.execute(update(MailAccount).where(MailAccount.id == account_id, MailAccount.lease_owner == owner)
                              .values(lease_until=until)).rowcount == 1


def release_lease(account_id: int, owner: str) -> None:
    db.session.execute(update(MailAccount).where(MailAccount.id == account_id, MailAccount.lease_owner == owner)
                       .values(lease_owner=None, lease_until=None))
    db.session.commit()


def fetch(run: FetchRun) -> None:
    """Run `run` to its end: done, failed with one clear cause, or skipped because another fetch holds the account."""
    account = run.account
    owner = uuid.uuid4().hex
    if not archiving_enabled() or not account.enabled:
        _finish(run, RUN_SKIPPED, None, "Mail archiving or this account is switched off.")
        return
    if not take_lease(account.id, owner):
        _finish(run, RUN_SKIPPED, None, "Another fetch of this account was running.")
        return
    run.state, run.started_at = RUN_RUNNING, utcnow()
    _settle_dead_runs(run)
    db.session.commit()
    try:
        _fetch_all(run, account, owner)
    except MailboxError as exc:
        db.session.rollback()
        account.consecutive_failures += 1
        _finish(run, RUN_FAILED, exc.kind, exc.message)
    except Exception:
        db.session.rollback()
        log.exception("fetch of mail account %s failed", account.id)
        account.consecutive_failures += 1
        _finish(run, RUN_FAILED, "internal", "The fetch failed unexpectedly; the worker log has the details.")
    else:
        account.consecutive_failures = 0
        _finish(run, RUN_DONE, run.error_class, run.error_message)  # done, perhaps "archived, but not removed"
    finally:
        release_lease(account.id, owner)


def _settle_dead_runs(run: FetchRun) -> None:
    """This run holds the account's lease, so any other run of the account still marked running lost it: its
    worker died (a host gone with the scheduler too would leave it "running" for ever)."""
    now = utcnow()
    for other in db.session.scalars(select(FetchRun).where(FetchRun.account_id == run.account_id,
                                                           FetchRun.id != run.id, FetchRun.state == RUN_RUNNING)):
        other.state, other.finished_at, other.error_class = RUN_FAILED, now, "abandoned"
        other.error_message = "The fetch stopped before it finished (a worker stopped); the next fetch resumed it."


def _finish(run: FetchRun, state: str, error_class, message) -> None:
    run.state, run.finished_at, run.error_class, run.error_message = state, utcnow(), error_class, message
    db.session.commit()


def _batches(items, count: int, max_bytes: int):
    batch, size = [], 0
    for item in items:
        if batch and (len(batch) >= count or size + item.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


RECONNECTS = 3  # sessions a provider's server may end (an access token's end) before the fetch gives up


def _open(account: MailAccount, retried: bool):
    """A session with the current secret: for a provider's sign-in a token refreshed when it expires soon, and once
    more, forced, when the server refuses it (revoked or expired early at the provider)."""
    try:
        return open_session(mailbox_settings(account))
    except MailboxError as exc:
        if exc.kind != "token_refused" or retried or account.oauth_grant_id is None:
            raise
    refresh(db.session.get(OAuthGrant, account.oauth_grant_id), force=True)
    return open_session(mailbox_settings(account))


class _Removal:
    """Whether this fetch still removes what it archived: a server that cannot remove never stops archiving."""

    def __init__(self, account: MailAccount) -> None:
        self.on = not account.keep_on_server

    def remove(self, session, items, run: FetchRun) -> bool:
        """Delete `items` on the server; False (and a note on the run) when the server cannot."""
        try:
            session.delete(items)
            return True
        except MailboxError as exc:
            if exc.kind not in ("delete_unsupported", "delete_failed"):
                raise
            self.on = False
            run.error_class = "not_removed"
            run.error_message = f"Archived, but could not be removed from the server: {exc.message.rstrip('.')}."
            return False


def _fetch_all(run: FetchRun, account: MailAccount, owner: str) -> None:
    oauth, reconnects, removal = auth_kind(account.auth_method) != PASSWORD, 0, _Removal(account)
    while True:  # one pass per session; POP3 ends its session at every batch's QUIT
        session = _open(account, retried=reconnects > 0)
        try:
            if _one_pass(run, account, owner, session, removal):
                return
        except MailboxError as exc:
            # Microsoft ends a session when its token runs out: sign in again with a fresh one and go on where the
            # last commit left off (each batch is committed before its messages are removed, so nothing is lost).
            if not oauth or exc.kind != "closed" or reconnects >= RECONNECTS:
                raise
            db.session.rollback()
            reconnects += 1
        finally:
            session.close()


def _one_pass(run: FetchRun, account: MailAccount, owner: str, session, removal: _Removal) -> bool:
    """One session's work; True when the fetch is done, False when a new session must go on (POP3)."""
    config = current_app.config
    items = session.list_messages()
    if session.settings.is_imap:
        _check_uidvalidity(account, session.uidvalidity)
    if run.total is None:
        run.total = sum(not i.flagged_deleted for i in items)
    seen = _seen(account.id, [i.server_id for i in items])
    leftovers = [i for i in items if i.server_id in seen and not seen[i.server_id].deleted_on_server]
    if leftovers and removal.on:
        if _delete(session, leftovers, seen, run, removal) and session.deletes_end_session:
            return False  # archived before a crash, removed now; POP3 goes on in a new session
        if session.deletes_end_session and not session.open:
            return False
    todo = [i for i in items if i.server_id not in seen and not i.flagged_deleted]
    if not todo:
        return True
    removed: list[str] = []  # removed on the server: noted with the next commit (a lost note is harmless)
    # IMAP removes what two batches archived at a time (STORE and EXPUNGE are a round trip each: B2); what a
    # stopped fetch archived but did not remove yet, the next one removes first (the leftovers above).
    archived: list = []
    batches = _batches(todo, config["FETCH_BATCH_SIZE"], config["FETCH_BATCH_BYTES"])
    ahead = not session.deletes_end_session  # POP3 ends its session with each batch: nothing to overlap
    for batch, downloaded, prepared in _ahead(session, batches, ahead=ahead,
                                              in_process=ahead and len(todo) > config["FETCH_BATCH_SIZE"]):
        stored = _store_batch(run, account, batch, downloaded, prepared)
        _note_removed(account.id, removed)
        if not renew_lease(account.id, owner):
            db.session.rollback()
            raise MailboxError("lease_lost", "Another worker took over this account's fetch.")
        db.session.commit()  # one commit a batch: durable in the archive before anything is deleted
        removed = []
        if removal.on:
            archived += [i for i in batch if i.server_id in stored]
            if session.deletes_end_session or len(archived) >= 2 * config["FETCH_BATCH_SIZE"]:
                removed, archived = _remove(session, archived, run, removal), []
            if session.deletes_end_session:  # POP3: the session ended with the deletion; go on in a new one
                _note_removed(account.id, removed)
                db.session.commit()
                return False
    if archived and removal.on:
        removed += _remove(session, archived, run, removal)
    _note_removed(account.id, removed)
    db.session.commit()
    return True


def _remove(session, items, run: FetchRun, removal: _Removal) -> list[str]:
    """Remove archived (committed) `items` on the server; their server ids, or none when it could not."""
    if not removal.remove(session, items, run):
        return []
    run.deleted += len(items)
    return [i.server_id for i in items]


def _check_uidvalidity(account: MailAccount, uidvalidity: int) -> None:
    """A new UIDVALIDITY means new server ids: the sha256 dedupe keeps re-downloads from doubling mail."""
    if account.imap_uidvalidity != uidvalidity:
        account.imap_uidvalidity = uidvalidity
        db.session.commit()


def _seen(account_id: int, server_ids: list[str]) -> dict[str, SeenMessage]:
    found = {}
    for start in range(0, len(server_ids), 500):
        chunk = server_ids[start:start + 500]
        for row in db.session.scalars(select(SeenMessage).where(SeenMessage.account_id == account_id,
                                                                SeenMessage.server_id.in_(chunk))):
            found[row.server_id] = row
    return found


def _ahead(session, batches, ahead: bool, in_process: bool):
    """(batch, downloaded, Prepared) for each batch. IMAP: batch n+1 is downloaded before batch n is stored and
    parsed while it is (ingest.prepare, in a process of its own when there is more than a batch: ingest.parser),
    so parsing overlaps the writes (docs/benchmarks.md, B1 and B8). Nothing changes in what is durable when:
    each batch is still committed before it is removed, and one downloaded ahead but not stored is fetched
    again next time. POP3 ends its session with each batch's deletion, so it downloads one batch at a time."""
    size_cap = current_app.config["ARCHIVE_PARSE_LIMIT"]
    vectors = db.session.get_bind().dialect.name == "postgresql"
    with ingest.parser(in_process) as pool:

        def fetched(batch):
            downloaded = list(session.download(batch))
            return batch, downloaded, pool.submit(ingest.prepare, [raw for _, raw in downloaded], size_cap, vectors)

        pending = None
        for batch in batches:
            if not ahead:
                batch, downloaded, future = fetched(batch)
                yield batch, downloaded, future.result()
                continue
            try:
                following = fetched(batch)
            except MailboxError:
                if pending is None:
                    raise
                yield pending[0], pending[1], pending[2].result()  # store what came before, then fail
                raise
            if pending is not None:
                yield pending[0], pending[1], pending[2].result()
            pending = following
        if pending is not None:
            yield pending[0], pending[1], pending[2].result()


def _store_batch(run: FetchRun, account: MailAccount, batch, downloaded, prepared) -> dict[str, int]:
    """Archive the downloaded batch in one go, and note each server id as seen (the caller commits)."""
    results = ingest.store_batch(account.space_id, account.id, [raw for _, raw in downloaded], prepared)
    rows = [{"account_id": account.id, "server_id": item.server_id[:200], "message_id": message_id,
             "deleted_on_server": False} for (item, _), (message_id, _) in zip(downloaded, results)]
    if rows:
        db.session.execute(insert(SeenMessage.__table__), rows)
    run.bytes += sum(len(raw) for _, raw in downloaded)
    run.fetched += sum(created for _, created in results)
    run.duplicates += sum(not created for _, created in results)
    return {item.server_id: message_id for (item, _), (message_id, _) in zip(downloaded, results)}


def _delete(session, items, seen: dict, run: FetchRun, removal: _Removal) -> bool:
    """Remove what the archive holds from the server, then note it (the archive's commit came first)."""
    items = [i for i in items if i.server_id in seen]
    if not removal.remove(session, items, run):
        db.session.commit()
        return False
    _note_removed(run.account_id, [item.server_id for item in items])
    run.deleted += len(items)
    db.session.commit()
    return True


def _note_removed(account_id: int, server_ids: list[str]) -> None:
    server_ids = [server_id[:200] for server_id in server_ids]
    for start in range(0, len(server_ids), 500):
        db.session.execute(update(SeenMessage).where(
            SeenMessage.account_id == account_id, SeenMessage.server_id.in_(server_ids[start:start + 500]))
            .values(deleted_on_server=True))
