"""The worker process class (`rq worker -w workers.worker.WarmWorker`): the app is made and the job modules are
imported once, in the worker, before any job; each job's forked work horse starts warm from that copy.

A plain `rq worker` forks a horse that imports the job's module, builds the app and compiles the mail templates
again for every job: about 0.3 s a job here, which a sender woken many times a minute (and the fan-out before it)
paid each time (B6 at 2,000 notifications: 0.36 of raw smtplib with it, 0.69 without, docs/benchmarks.md).

A horse runs each job, so a job that crashes or leaks cannot take the worker with it; all but the two that send
mail (IN_PROCESS). Those are this project's own code, run many times a minute, and a horse cost each of them
~40 ms before its first mail: the fork, RQ's setup in the horse, a new database connection and every statement
compiled again. They run in the worker itself, as RQ's SimpleWorker runs every job, on its warm connection.
"""
import gc
import importlib
import pkgutil

from rq.defaults import DEFAULT_WORKER_TTL
from rq.worker import Worker, WorkerStatus
from sqlalchemy.orm import configure_mappers

import workers
from webapp.jobs import DELIVER_DUE, FAN_OUT_DUE

# Every module of this package a job runs from, found rather than listed (so a new one is never left cold); not the
# `rq cron` configuration, whose import registers its schedule.
JOB_MODULES = tuple(f"workers.{m.name}" for m in pkgutil.iter_modules(workers.__path__)
                    if m.name not in ("cron", "worker", "rq_settings"))
IN_PROCESS = (DELIVER_DUE, FAN_OUT_DUE)


class WarmWorker(Worker):
    """An RQ worker whose horses inherit the app and the imported job modules instead of making them again."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in JOB_MODULES:
            importlib.import_module(name)
        self.flask_app = workers._worker_app()  # builds the engine, opens no connection: nothing shared across fork
        env = self.flask_app.jinja_env  # every template compiled once here, not in each horse (the mail ones)
        for name in env.list_templates(filter_func=lambda n: n.endswith((".html", ".txt"))):
            env.get_template(name)
        configure_mappers()  # the ORM's classes set up here once, not on each horse's first query (27 ms a job)
        # What is made so far lives as long as the worker: out of the collector's sight (gc.freeze), a horse's
        # collections neither walk it (a fan-out to 10,000 watchers spent 100 of its first 140 ms there) nor
        # write to its pages, which the horse then shares with the worker instead of copying.
        gc.collect()
        gc.freeze()

    def main_work_horse(self, job, queue) -> None:
        from webapp.extensions import db

        with self.flask_app.app_context():
            db.engine.dispose(close=False)  # the connections the worker opened (IN_PROCESS jobs) stay the worker's
        super().main_work_horse(job, queue)

    def execute_job(self, job, queue) -> None:
        if job.func_name not in IN_PROCESS:
            super().execute_job(job, queue)
            return
        self.prepare_execution(job)  # as SimpleWorker.execute_job
        self.perform_job(job, queue)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job) -> int:
        """No horse is watched while a job runs in the worker: its heartbeat lasts the job's timeout (SimpleWorker's
        rule), so RQ does not take it for abandoned."""
        if job.func_name in IN_PROCESS:
            return DEFAULT_WORKER_TTL if job.timeout in (None, -1) else int(job.timeout) + 60
        return super().get_heartbeat_ttl(job)
