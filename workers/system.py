"""Site housekeeping jobs: the worker check an admin can run and the scheduler's sweep."""
import os
import socket
import time
from datetime import timedelta

from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select

from webapp.settings import SiteSettings
from webapp.archive.services import forget_connection_tests, settle_abandoned_runs
from webapp.auth import sessions
from webapp.extensions import db
from webapp.jobs import FAILED, QUEUED, RUNNING, JobRun, redis_connection
from webapp.timeutil import utcnow
from workers import job, tracked

LOST_AFTER = timedelta(minutes=10)


@tracked
def worker_check(run: JobRun) -> None:
    """Prove a worker picks up jobs and reaches the database and Redis, step by step."""
    run.total = 2
    started = time.perf_counter()
    db.session.execute(select(1))
    run.done_count = 1
    db.session.commit()
    redis_connection().ping()
    run.done_count = 2
    elapsed = (time.perf_counter() - started) * 1000
    run.message = (
        f"Worker {socket.gethostname()} (pid {os.getpid()}) reached the database and Redis in {elapsed:.0f} ms."
    )


@job
def sweep() -> None:
    """Every minute from workers/cron.py: note that the scheduler runs and settle lost jobs."""
    now = utcnow()
    SiteSettings.get().last_sweep_at = now
    stale = db.session.scalars(
        select(JobRun).where(JobRun.state.in_([QUEUED, RUNNING]), JobRun.created_at < now - LOST_AFTER)
    )
    connection = redis_connection()
    for run in stale:
        try:
            rq_job = Job.fetch(run.rq_job_id, connection=connection)
            if rq_job.get_status() not in ("failed", "stopped", "canceled"):
                continue
        except NoSuchJobError:
            pass
        run.state, run.finished_at = FAILED, now
        run.message = "The job was lost before it finished (a worker or Redis stopped). Start it again."
    settle_abandoned_runs()
    forget_connection_tests()
    sessions.forget_expired()
    db.session.commit()
