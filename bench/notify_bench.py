"""Notification fan-out at scale (issue 6): one page, N watchers, two real RQ worker processes, an aiosmtpd sink.

    python bench/notify_bench.py [--watchers 10000] [--workers 2] [--saves 20]

Prints the page save's request time (median and p95 over --saves edits, in-process) and the time from the save
that notifies everyone until the sink holds all N mails, with the rate. Also sends the same N mails with raw
smtplib over one connection to the same sink, for the ratio issue 7 asks for (B6). Not part of the test run."""
import argparse
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORKDIR = Path(tempfile.mkdtemp(prefix="spacemail-notify-bench-"))
os.environ.setdefault("SPACEMAIL_INSTANCE_DIR", str(WORKDIR))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.extensions import db  # noqa: E402

PASSWORD = "benchmark password"


class Counter:
    def __init__(self) -> None:
        self.count, self.lock = 0, threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def build(app, watchers: int, sink_port: int):
    """Users, a space they may all view, one page they all watch, and an SMTP server pointing at the sink."""
    from webapp.auth.models import User
    from webapp.auth.services import create_user
    from webapp.content.services import create_page
    from webapp.notify.models import ContentEvent, Watch
    from webapp.outgoing.servers import ServerData, create_server
    from webapp.settings import SiteSettings
    from webapp.spaces.services import create_site_space

    db.create_all()
    settings = SiteSettings.get()
    settings.notify_coalesce_minutes = 10  # the timed saves coalesce; the last one is sent at once
    actor = create_user("author", "author@example.org", "Ann Author", PASSWORD)
    space = create_site_space(actor, "BENCH", "Bench")
    space.everyone_can_view = True
    page = create_page(space, actor, "Runbook", "v1")
    create_server(ServerData("Sink", "spacemail@example.org", "${fullname} (Spacemail)", "[Bench]", "127.0.0.1",
                             sink_port, "none", "", "", 30, "none", ""))
    db.session.commit()
    hashed = actor.password_hash
    db.session.execute(insert(User), [
        {"username": f"w{i}", "email": f"w{i}@example.org", "full_name": f"Watcher {i}", "password_hash": hashed}
        for i in range(watchers)])
    first = db.session.scalar(db.select(db.func.min(User.id)).where(User.username.like("w%")))
    db.session.execute(insert(Watch), [{"user_id": first + i, "scope": "page", "space_id": space.id,
                                        "page_id": page.id} for i in range(watchers)])
    db.session.execute(db.delete(ContentEvent))  # the creation is old news
    db.session.commit()
    return page.id


def start_workers(n: int, env: dict) -> list[subprocess.Popen]:
    log = open(WORKDIR / "workers.log", "wb")
    return [subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "-u", env["SPACEMAIL_REDIS_URL"], "spacemail"],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for _ in range(n)]


def raw_smtplib(n: int, port: int, counter: Counter) -> float:
    """The reference: the same number of small mails over one smtplib connection, as fast as it goes."""
    before = counter.count
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as conn:
        for i in range(n):
            conn.sendmail("spacemail@example.org", [f"w{i}@example.org"],
                          f"Subject: Bench › Runbook\r\nTo: w{i}@example.org\r\n\r\nAnn edited Runbook.\r\n".encode())
    while counter.count - before < n:
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--saves", type=int, default=20)
    args = parser.parse_args()

    redis_proc, redis_url = start_redis()
    counter = Counter()
    sink_port = free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=sink_port)
    controller.start()
    database = f"sqlite:///{WORKDIR / 'bench.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database, "REDIS_URL": redis_url, "RQ_QUEUE": "spacemail",
                      "SECRET_KEY": "bench", "BASE_URL": "https://spacemail.example.org"})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": database, "SPACEMAIL_REDIS_URL": redis_url,
           "SPACEMAIL_SECRET_KEY": "bench", "SPACEMAIL_INSTANCE_DIR": str(WORKDIR)}
    workers = []
    try:
        with app.app_context():
            started = time.perf_counter()
            page_id = build(app, args.watchers, sink_port)
            print(f"built {args.watchers:,} watchers in {time.perf_counter() - started:.1f} s")
            os.environ["SPACEMAIL_ENCRYPTION_KEYS"] = ",".join(app.config["ENCRYPTION_KEYS"])
            env["SPACEMAIL_ENCRYPTION_KEYS"] = os.environ["SPACEMAIL_ENCRYPTION_KEYS"]
        import re

        client = app.test_client()
        login_form = client.get("/login").get_data(as_text=True)
        login_token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login_form).group(1)
        assert client.post("/login", data={"login": "author", "password": PASSWORD,
                                           "csrf_token": login_token}).status_code == 302

        def save(version: int) -> float:
            form = client.get(f"/spaces/BENCH/pages/{page_id}/edit").get_data(as_text=True)
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
            t0 = time.perf_counter()
            response = client.post(f"/spaces/BENCH/pages/{page_id}/edit", data={
                "csrf_token": token, "title": "Runbook", "body": f"v{version + 1}", "version": version})
            elapsed = time.perf_counter() - t0
            assert response.status_code == 302, response.status_code
            return elapsed * 1000

        times = [save(v) for v in range(1, args.saves + 1)]
        print(f"page save with {args.watchers:,} watchers: median {statistics.median(times):.1f} ms, "
              f"p95 {sorted(times)[int(len(times) * 0.95) - 1]:.1f} ms over {len(times)} saves (goal ≤ 50 ms)")
        with app.app_context():
            from webapp.notify.models import ContentEvent
            from webapp.settings import SiteSettings

            db.session.execute(db.delete(ContentEvent))  # the coalesced timing saves are not the measured run
            SiteSettings.get().notify_coalesce_minutes = 0
            db.session.commit()
        workers = start_workers(args.workers, env)
        time.sleep(3)  # workers up
        before = counter.count
        started = time.perf_counter()
        save(args.saves + 1)
        while counter.count - before < args.watchers:
            if time.perf_counter() - started > 900:
                raise SystemExit(f"only {counter.count - before} of {args.watchers} mails after 15 minutes")
            time.sleep(0.05)
        spacemail = time.perf_counter() - started
        reference = raw_smtplib(args.watchers, sink_port, counter)
        print(f"save -> {args.watchers:,} mails at the sink with {args.workers} workers: {spacemail:.1f} s "
              f"({args.watchers / spacemail:,.0f} mails/s; goal ≤ 120 s)")
        print(f"raw smtplib, one connection, same sink: {reference:.1f} s ({args.watchers / reference:,.0f} mails/s); "
              f"ratio {reference / spacemail:.2f} (issue 7's B6 goal ≥ 0.8)")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=20)
        controller.stop()
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(WORKDIR, ignore_errors=True)


if __name__ == "__main__":
    main()
