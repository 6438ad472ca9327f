"""Queueing work for the RQ workers, only once the database has committed what the job reads."""
import logging
from datetime import datetime

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import ForeignKey, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from webapp.extensions import db
from webapp.timeutil import UTCDateTime, utcnow

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

# Jobs by dotted name: webapp/ never imports workers/ (tests/test_jobs.py checks each name imports).
FETCH_ACCOUNT = "workers.fetch.fetch_account"
TEST_CONNECTION = "workers.fetch.test_connection"
IMPORT_ARCHIVE = "workers.fetch.import_archive"
DELIVER_DUE = "workers.send.deliver_due"
SEND_TEST_EMAIL = "workers.send.send_test_email"
FAN_OUT_DUE = "workers.notify.fan_out_due"
WORKER_CHECK = "workers.system.worker_check"
JOB_NAMES = (FETCH_ACCOUNT, TEST_CONNECTION, IMPORT_ARCHIVE, DELIVER_DUE, SEND_TEST_EMAIL, FAN_OUT_DUE, WORKER_CHECK)
_PENDING = "spacemail.pending_jobs"
log = logging.getLogger(__name__)


class JobRun(db.Model):
    """What a page shows of a queued job: its state, its progress and its outcome."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(db.String(40))
    state: Mapped[str] = mapped_column(db.String(16), default=QUEUED)
    done_count: Mapped[int] = mapped_column(default=0)
    total: Mapped[int | None] = mapped_column()
    message: Mapped[str] = mapped_column(db.Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)

    @property
    def rq_job_id(self) -> str:
        return f"jobrun-{self.id}"


def redis_connection() -> Redis:
    ext = current_app.extensions
    if "spacemail.redis" not in ext:
        ext["spacemail.redis"] = make_redis(current_app.config)
    return ext["spacemail.redis"]


def make_redis(config) -> Redis:
    """The site's Redis: the master that Sentinel names (REDIS_SENTINELS), or the one at REDIS_URL."""
    if config.get("REDIS_SENTINELS"):
        from redis.sentinel import Sentinel

        sentinel = Sentinel(config["REDIS_SENTINELS"], socket_timeout=5)
        return sentinel.master_for(config["REDIS_SENTINEL_MASTER"], password=config.get("REDIS_PASSWORD"),
                                   socket_timeout=30)
    return Redis.from_url(config["REDIS_URL"])


def limiter_storage_uri(config) -> str:
    """Flask-Limiter's storage: the same Redis (through Sentinel when there is one)."""
    if config.get("REDIS_SENTINELS"):
        hosts = ",".join(f"{host}:{port}" for host, port in config["REDIS_SENTINELS"])
        password = f":{config['REDIS_PASSWORD']}@" if config.get("REDIS_PASSWORD") else ""
        return f"redis+sentinel://{password}{hosts}/{config['REDIS_SENTINEL_MASTER']}"
    return config["REDIS_URL"]


def get_queue() -> Queue:
    return Queue(current_app.config["RQ_QUEUE"], connection=redis_connection())


def enqueue_after_commit(func: str, *args, job_id: str | None = None, once: str | None = None, **options) -> None:
    """Queue `func(*args)` when the current transaction commits; drop it if it (or its savepoint) rolls back.

    With `once`, at most one such job waits in the queue: the job calls `ready_for_more(once)` when it starts.
    """
    session = db.session()
    session.connection()  # begin, so there is a transaction to tie the job to
    transaction = session.get_nested_transaction() or session.get_transaction()
    pending = session.info.setdefault(_PENDING, [])
    if once and any(item[4].get("once") == once and _within(transaction, item[0]) for item in pending):
        return  # a job for this work already waits on this transaction (or one that holds it)
    pending.append((transaction, func, args, job_id, dict(options, once=once) if once else options))


def _once_key(name: str) -> str:
    return f"spacemail:waiting:{name}"


def ready_for_more(once: str) -> None:
    """Called by a `once` job as it starts: work committed from now on queues another run."""
    redis_connection().delete(_once_key(once))


def start_job(kind: str, func: str, *args, user=None) -> JobRun:
    """Record a JobRun and queue `func(run_id, *args)` after commit; the caller commits."""
    run = JobRun(kind=kind, created_by_id=getattr(user, "id", None))
    db.session.add(run)
    db.session.flush()
    enqueue_after_commit(func, run.id, *args, job_id=run.rq_job_id)
    return run


@event.listens_for(Session, "after_commit")
def _enqueue_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    queue = get_queue()
    try:
        for _transaction, func, args, job_id, options in pending:
            once = options.get("once")
            if once and not queue.connection.set(_once_key(once), "1", nx=True, ex=300):
                continue  # one is waiting already and will see this work
            queue.enqueue(func, *args, job_id=job_id, **{k: v for k, v in options.items() if k != "once"})
    except RedisError:
        # The rows are committed; the sweeper settles what Redis never got (see workers/system.py).
        log.warning("Redis refused %d job(s); the sweeper will settle them", len(pending), exc_info=True)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, previous_transaction) -> None:
    """Drop the jobs of the transaction that rolled back and of the savepoints inside it."""
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [item for item in pending if not _within(item[0], previous_transaction)]


def _within(transaction, ancestor) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False
