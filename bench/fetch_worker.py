"""One fetch of one mail account in its own process, as a worker runs it; prints its figures as JSON.

    SPACEMAIL_DATABASE_URL=... python bench/fetch_worker.py ACCOUNT_ID

Used by bench/fetch_bench.py so that the time and the peak memory are the worker's alone."""
import json
import resource
import sys
import time

import common  # noqa: F401  (paths and environment)
from webapp import create_app
from webapp.archive import fetching
from webapp.archive.models import FetchRun
from webapp.extensions import db


def main(account_id: int) -> None:
    app = create_app()
    with app.app_context():
        run = FetchRun(account_id=account_id, trigger="manual")  # no job: this process is the worker
        db.session.add(run)
        db.session.commit()
        baseline = common.rss_kb()
        started = time.perf_counter()
        fetching.fetch(run)
        seconds = time.perf_counter() - started
        db.session.refresh(run)
        print(json.dumps({"seconds": seconds, "state": run.state, "error": run.error_message, "fetched": run.fetched,
                          "deleted": run.deleted, "baseline_rss_kb": baseline, "peak_rss_kb": common.peak_rss_kb(),
                          # the process that parses ahead, forked from this one (ingest.parser)
                          "parser_peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                          "worker_cpu_s": _cpu(resource.RUSAGE_SELF), "parser_cpu_s": _cpu(resource.RUSAGE_CHILDREN)}))


def _cpu(who) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main(int(sys.argv[1]))
