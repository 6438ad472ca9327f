"""The job path end to end: request -> JobRun -> real redis-server -> real RQ worker -> page."""
import os
import re
import subprocess
import sys
import time

from redis import Redis
from rq import Queue

from webapp.jobs import DONE, WORKER_CHECK, JobRun, start_job
from webapp.settings import SiteSettings

from tests.conftest import ROOT


def test_a_request_queues_a_job_that_a_worker_runs(client, make_user, login, db, run_jobs):
    login(make_user("root", admin=True))
    started = client.htmx_post("/admin/system/check")
    body = started.get_data(as_text=True)
    assert "<html" not in body and "Waiting for a worker" in body and 'hx-trigger="load delay:1s"' in body
    run_id = int(re.search(r'id="job-(\d+)"', body).group(1))

    assert run_jobs() == 1
    run = db.session.get(JobRun, run_id)
    assert run.state == DONE and run.done_count == 2 and run.finished_at is not None
    polled = client.htmx_get(f"/admin/jobs/{run_id}").get_data(as_text=True)
    assert "Done." in polled and "reached the database and Redis" in polled
    assert "hx-trigger" not in polled  # finished: the partial stops polling
    assert "<html" in client.get(f"/admin/jobs/{run_id}").get_data(as_text=True)
    plain = client.post("/admin/system/check")  # without script: to the run's own page, which a reload only reads
    assert plain.status_code == 303 and plain.headers["Location"].endswith(f"/admin/jobs/{run_id + 1}")


def test_a_job_queued_in_a_rolled_back_transaction_never_runs(app, db, redis_server, run_jobs):
    queue = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(redis_server))
    start_job("worker-check", WORKER_CHECK)
    db.session.rollback()
    assert len(queue) == 0
    assert db.session.query(JobRun).count() == 0

    # A savepoint that rolls back keeps the outer transaction's job.
    kept = start_job("worker-check", WORKER_CHECK)
    with db.session.begin_nested() as nested:
        start_job("worker-check", WORKER_CHECK)
        nested.rollback()
    assert len(queue) == 0  # nothing before the commit
    db.session.commit()
    assert [job.args[0] for job in queue.jobs] == [kept.id]
    assert run_jobs() == 1


def test_running_a_finished_job_again_changes_nothing(app, db, run_jobs):
    run = start_job("worker-check", WORKER_CHECK)
    db.session.commit()
    run_jobs()
    db.session.refresh(run)
    finished_at = run.finished_at
    from workers.system import worker_check

    worker_check(run.id)
    db.session.refresh(run)
    assert run.finished_at == finished_at


def test_rq_cron_runs_the_sweep(app, db, redis_server, run_jobs):
    """`rq cron workers.cron` (the real scheduler) queues the sweep at start; a worker records it."""
    env = {**os.environ, "SPACEMAIL_QUEUE": app.config["RQ_QUEUE"], "PYTHONPATH": str(ROOT)}
    cron = subprocess.Popen([sys.executable, "-m", "rq.cli", "cron", "-u", redis_server, "workers.cron"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    queue = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(redis_server))
    try:
        deadline = time.monotonic() + 20
        while len(queue) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        cron.terminate()
        output = cron.communicate(timeout=10)[0].decode()
    assert sorted(job.func_name for job in queue.jobs) == [
        "workers.fetch.fetch_due_accounts", "workers.fetch.tidy_search_index", "workers.notify.fetch_replies",
        "workers.notify.notify_tick", "workers.oauth.refresh_tokens", "workers.send.fetch_bounces",
        "workers.send.sweep_queue", "workers.system.sweep"], output
    assert SiteSettings.get().last_sweep_at is None
    run_jobs()
    db.session.expire_all()
    assert SiteSettings.get().last_sweep_at is not None


def test_sweep_settles_a_job_that_redis_lost(app, db, redis_server, run_jobs):
    from datetime import timedelta

    from webapp.timeutil import utcnow
    from workers.system import sweep

    run = start_job("worker-check", WORKER_CHECK)
    db.session.commit()
    Redis.from_url(redis_server).flushall()  # Redis restarted without persistence
    run.created_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    sweep()
    db.session.refresh(run)
    assert run.state == "failed" and "lost" in run.message
