"""Fetching jobs: one account's fetch, the scheduled sweep of due accounts, Test Connection."""
import logging

from webapp.archive import fetching
from webapp.archive.models import RUN_QUEUED, FetchRun
from webapp.archive.services import queue_due_fetches, run_connection_test
from webapp.extensions import db
from webapp.jobs import JobRun
from workers import job, tracked

log = logging.getLogger(__name__)


@job
def fetch_account(fetch_run_id: int) -> None:
    """Fetch one account into its space's archive; a second run of the same job finds nothing to do."""
    run = db.session.get(FetchRun, fetch_run_id)
    if run is not None and run.state == RUN_QUEUED:
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


@job
def tidy_search_index() -> None:
    """Hourly from workers/cron.py: merge the SQLite search index's segments (search.tidy_index)."""
    from webapp.archive.search import tidy_index

    steps = tidy_index()
    if steps:
        log.info("search index: %d merge step(s)", steps)


@tracked
def import_archive(run: JobRun) -> None:
    """Import uploaded mbox/.eml files into a space's archive (progress on the JobRun)."""
    from webapp.archive.importing import run_import

    run_import(run)


@tracked
def test_connection(run: JobRun) -> None:
    """Sign in with the form's values and report what the server offered, or the one cause of failure."""
    run_connection_test(run)
