"""B9: many workers at once on PostgreSQL.

Fetching: 40 mail accounts of 1,000 corpus messages each (on one Dovecot, IMAPS), fetched by 1 and then by 4
`rq worker` processes at once; every message must be archived exactly once, every fetch done (no lease lost, no
deadlock in the workers' logs), every mailbox empty. Sending: 20,000 queued mails flushed by 4 workers to one
SMTP sink; each must arrive once. The figure is the run's throughput; the 4-worker run is compared with 1."""
import os
import subprocess
import sys
import threading
import time

from common import ROOT, WORKDIR, Result, free_port, make_app, median, say, start_redis

import corpus

ACCOUNTS, PER_ACCOUNT, MAILS = 40, 1000, 20_000


def _workers(count: int, url: str, redis_url: str, name: str) -> float:
    """Seconds for `count` burst workers to empty the queue; their logs checked for deadlocks and lost leases."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": url, "SPACEMAIL_REDIS_URL": redis_url}
    logs = [WORKDIR / f"b9-{name}-{i}.log" for i in range(count)]
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--burst", "-w", "workers.worker.WarmWorker",
                              "-u", redis_url, "spacemail"],
                              cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT) for log in logs]
    for proc in procs:
        proc.wait(timeout=3600)
    seconds = time.perf_counter() - started
    for log in logs:
        text = log.read_text(errors="replace")
        for bad in ("deadlock detected", "lease_lost", "Traceback"):
            if bad in text:
                raise RuntimeError(f"{bad!r} in {log}")
    return seconds


def fetch_run(workers: int, bench, urls, redis_url: str, mailboxes: list[list[bytes]]) -> float:
    """Messages/s for `workers` workers fetching the 40 accounts into a new PostgreSQL archive."""
    from sqlalchemy import func, select, text

    from tests.archive.helpers import account_data
    from tests.mailservers import PASSWORD as MAILBOX_PASSWORD
    from webapp.archive.models import FetchRun, Message
    from webapp.archive.services import create_account, queue_account_fetch
    from webapp.auth.models import User
    from webapp.extensions import db
    from webapp.spaces.services import create_site_space

    url = urls.postgres(f"b9_fetch_{workers}")
    app = make_app(url, REDIS_URL=redis_url, RQ_QUEUE="spacemail")
    users = [bench.mailbox(raws) for raws in mailboxes]
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.username == "bench"))
        spaces = [create_site_space(admin, f"TEAM{i}", f"Team {i}") for i in range(4)]
        db.session.commit()
        for i, user in enumerate(users):
            create_account(spaces[i % 4], account_data(bench.dovecot, "imaps", user, MAILBOX_PASSWORD,
                                                       name=f"box {i}"))
        db.session.commit()
        from webapp.archive.models import MailAccount

        for account in db.session.scalars(select(MailAccount)):
            queue_account_fetch(account, "manual")
        db.session.commit()
    seconds = _workers(workers, url, redis_url, f"fetch-{workers}")
    with app.app_context():
        stored = db.session.scalar(select(func.count(Message.id)))
        states = dict(db.session.execute(select(FetchRun.state, func.count()).group_by(FetchRun.state)).all())
        doubles = db.session.execute(text("SELECT count(*) FROM (SELECT space_id, message_id_header FROM "
                                          "archive_messages GROUP BY 1, 2 HAVING count(*) > 1) d")).scalar()
        db.engine.dispose()
    left = sum(bench.left_on_server(user) for user in users)
    if stored != ACCOUNTS * PER_ACCOUNT or doubles or left or states != {"done": ACCOUNTS}:
        raise RuntimeError(f"{workers} workers: {stored} stored, {doubles} twice, {left} left, runs {states}")
    return stored / seconds


class _Sink:
    def __init__(self) -> None:
        self.lock, self.recipients = threading.Lock(), []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def send_run(workers: int, urls, redis_url: str) -> tuple[float, int]:
    """(mails/s, mails that arrived more than once) for `workers` workers flushing MAILS queued mails."""
    from aiosmtpd.controller import Controller
    from webapp.extensions import db
    from webapp.outgoing.queue import queue_many
    from webapp.outgoing.servers import ServerData, create_server

    sink, port = _Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = urls.postgres(f"b9_send_{workers}")
        app = make_app(url, REDIS_URL=redis_url, RQ_QUEUE="spacemail")
        with app.app_context():
            create_server(ServerData("Sink", "site@example.org", "", "", "127.0.0.1", port, "none", "", "", 30,
                                     "none", ""))
            queue_many([{"recipient": f"reader{i}@example.org", "subject": f"B9 {i}", "body_text": "Sent at scale."}
                        for i in range(MAILS)])
            db.session.commit()
            db.engine.dispose()
        seconds = _workers(workers, url, redis_url, f"send-{workers}")
        deadline = time.monotonic() + 60
        while len(sink.recipients) < MAILS and time.monotonic() < deadline:
            time.sleep(0.1)
        if len(set(sink.recipients)) != MAILS:
            raise RuntimeError(f"{len(set(sink.recipients))} of {MAILS} mails arrived")
        return MAILS / seconds, len(sink.recipients) - MAILS
    finally:
        controller.stop()


def run(urls, runs: int = 1, accounts: int = ACCOUNTS, per_account: int = PER_ACCOUNT, mails: int = MAILS):
    global ACCOUNTS, PER_ACCOUNT, MAILS
    ACCOUNTS, PER_ACCOUNT, MAILS = accounts, per_account, mails
    from fetch_bench import FetchBench

    if urls.postgres("b9_probe") is None:
        return []
    redis, redis_url = start_redis()
    mailboxes = [list(corpus.generate(PER_ACCOUNT, 100 + i)) for i in range(ACCOUNTS)]
    bench = FetchBench(mailboxes[0])
    try:
        one, four = [], []
        for i in range(runs):
            say(f"B9 run {i + 1}/{runs}: {ACCOUNTS} accounts x {PER_ACCOUNT:,} messages, 1 worker then 4 (PostgreSQL)")
            one.append(fetch_run(1, bench, urls, redis_url, mailboxes))
            four.append(fetch_run(4, bench, urls, redis_url, mailboxes))
        say(f"B9: {MAILS:,} queued mails, 1 sender then 4")
        send_one, _ = send_run(1, urls, redis_url)
        send_four, doubles = send_run(4, urls, redis_url)
    finally:
        bench.close()
        redis.terminate()
    return [
        Result("B9 fetch", f"{ACCOUNTS} accounts x {PER_ACCOUNT:,} messages fetched by 4 workers at once (PostgreSQL, "
                           "IMAPS): every message once, no lease lost, no deadlock", median(four), "messages/s", four,
               "the same with 1 worker", median(one), one, median(four) / median(one), "reported (2 cores here)",
               None),
        Result("B9 send", f"{MAILS:,} queued mails flushed by 4 workers to one SMTP sink (PostgreSQL)", send_four,
               "mails/s", [send_four], "the same with 1 worker", send_one, [send_one], send_four / send_one,
               "each delivered once", doubles == 0, note=f"{doubles} delivered twice"),
    ]


if __name__ == "__main__":
    from common import Urls

    accounts, per_account, mails = (int(a) for a in (sys.argv[1:4] or (8, 200, 2000)))
    for r in run(Urls(), accounts=accounts, per_account=per_account, mails=mails):
        print(r.id, round(r.figure, 1), r.unit, "ratio", round(r.ratio or 0, 2), r.met, r.note)
