"""The worker process class (`rq worker -w workers.worker.WarmWorker`): the app is made and the job modules are
imported once, in the worker, before any job; each job's forked work horse starts warm from that copy.

A plain `rq worker` forks a horse that imports the job's module, builds the app and compiles the mail templates
again for every job: about 0.3 s a job here, which a sender woken many times a minute (and the fan-out before it)
paid each time (B6 at 2,000 notifications: 0.36 of raw smtplib with it, 0.69 without, docs/benchmarks.md).
A horse still runs each job, so a job that crashes or leaks cannot take the worker with it.
"""
import gc
import importlib
import pkgutil

from rq.worker import Worker
from sqlalchemy.orm import configure_mappers

import workers

# Every module of this package a job runs from, found rather than listed (so a new one is never left cold); not the
# `rq cron` configuration, whose import registers its schedule.
JOB_MODULES = tuple(f"workers.{m.name}" for m in pkgutil.iter_modules(workers.__path__)
                    if m.name not in ("cron", "worker", "rq_settings"))


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
            db.engine.dispose(close=False)  # a connection the worker opened (none is expected) stays the worker's
        super().main_work_horse(job, queue)
