"""Fetching jobs: one account's fetch, the scheduled sweep of due accounts, Test Connection."""
import logging

from webapp.archive import fetching
from webapp.archive.connect import MailboxError, MailboxSettings, resolve_allowed
from webapp.archive.mailbox import probe
from webapp.archive.models import FetchRun
from webapp.archive.services import connection_test_for, queue_due_fetches
from webapp.extensions import db
from webapp.jobs import JobRun
from webapp.security import secret_box
from webapp.settings import SiteSettings
from workers import job, tracked

log = logging.getLogger(__name__)


@job
def fetch_account(fetch_run_id: int) -> None:
    """Fetch one account into its space's archive; a second run of the same job finds nothing to do."""
    run = db.session.get(FetchRun, fetch_run_id)
    if run is not None and run.state == "queued":
        fetching.fetch(run)


@job
def fetch_due_accounts() -> None:
    """Every minute from workers/cron.py: queue each account whose interval has passed (one job each)."""
    queue_due_fetches()


@job
def purge_trash() -> None:
    """Daily from workers/cron.py: mail that has been in a space's trash for 30 days goes for good."""
    from webapp.archive.trash import purge

    count = purge()
    if count:
        log.info("purged %d message(s) from the trash", count)


@tracked
def import_archive(run: JobRun) -> None:
    """Import uploaded mbox/.eml files into a space's archive (progress on the JobRun)."""
    from webapp.archive.importing import run_import

    run_import(run)


@tracked
def test_connection(run: JobRun) -> None:
    """Sign in with the form's values and report what the server offered, or the one cause of failure."""
    test = connection_test_for(run)
    values = dict(test.settings)
    try:
        settings = MailboxSettings(
            protocol=values["protocol"], host=values["host"], port=int(values["port"]), username=values["username"],
            password=secret_box().decrypt(test.password_encrypted), require_starttls=values["require_starttls"],
            folder=values["folder"] or "INBOX", trusted_ca_pem=test.trusted_ca_pem, timeout=15,
        )
        address = resolve_allowed(settings.host, settings.port, SiteSettings.get().mail_host_allowlist)
        info = probe(settings, address)
        test.result = {"ok": True, "address": address, "tls_version": info.tls_version,
                       "capabilities": info.capabilities[:40], "message_count": info.message_count}
    except MailboxError as exc:
        test.result = {"ok": False, "kind": exc.kind, "message": exc.message}
    except Exception:
        log.exception("connection test %s failed", run.id)
        test.result = {"ok": False, "kind": "internal", "message": "The test failed unexpectedly; the worker log has "
                                                                  "the details."}
    finally:
        test.password_encrypted = None  # the form's password is not kept once tested
    run.done_count = run.total = 1
