"""RQ job functions. Each runs inside a Flask app context; workers stay thin (DESIGN.md §1)."""
import functools
import logging

from flask import has_app_context

from webapp import health
from webapp.extensions import db
from webapp.jobs import DONE, FAILED, RUNNING, JobRun
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)
_app = None


def _worker_app():
    """One app per worker process, made on first use (after RQ forked, so no shared sockets)."""
    global _app
    if _app is None:
        from webapp import create_app

        _app = create_app()
    return _app


def job(func):
    """Run `func` inside an app context: the current one (tests, SimpleWorker) or the worker's own."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if has_app_context():
            health.report_host("worker")  # this host's key fingerprints, for `flask doctor` (once a minute)
            return func(*args, **kwargs)
        with _worker_app().app_context():
            health.report_host("worker")
            return func(*args, **kwargs)

    return wrapper


def tracked(func):
    """A job whose first argument is a JobRun id: marks it running, then done or failed."""

    @job
    @functools.wraps(func)
    def wrapper(run_id: int, *args, **kwargs):
        run = db.session.get(JobRun, run_id)
        if run is None or run.finished:
            return None  # already settled: running it twice changes nothing
        run.state, run.started_at = RUNNING, utcnow()
        db.session.commit()
        try:
            result = func(run, *args, **kwargs)
        except Exception as exc:
            db.session.rollback()
            run = db.session.get(JobRun, run_id)
            run.state, run.finished_at = FAILED, utcnow()
            run.message = f"The job failed ({type(exc).__name__}); the worker log has the details."
            db.session.commit()
            log.exception("job %s (run %s) failed", func.__name__, run_id)
            raise
        run.state, run.finished_at = DONE, utcnow()
        db.session.commit()
        return result

    return wrapper

