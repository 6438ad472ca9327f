"""B6: notifications to N watchers (10,000 by default) from the page save to the sink, against raw smtplib.

One page in a space everyone can view, N users watching it, SQLite, two real `rq worker` processes (the
Procfile's WarmWorker) and an aiosmtpd sink on loopback (plain SMTP, offering PIPELINING as Postfix, Exim, Gmail and
Microsoft 365 do; raw smtplib, the reference, cannot use it). The save's request time is measured in-process
through Flask's test client over 20 saves that coalesce (so they queue no mail); then one save that notifies everyone is timed
until the sink holds all N mails. The reference sends those same mails again (envelopes and bytes as the sink
received them) with raw smtplib over as many connections as there are workers (issue 19: "the same connection
count"; until then it used one, which flattered Spacemail's two), each connection its own process."""
import gc
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import PASSWORD, ROOT, WORKDIR, Result, free_port, median, p95, say, sqlite_url, start_redis


class Counter:
    """The sink's handler: counts what arrives, and keeps what Spacemail sent for the reference to send again."""

    def __init__(self) -> None:
        self.count, self.lock, self.kept, self.keeping = 0, threading.Lock(), [], False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # PIPELINING, as real relays
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            if self.keeping:
                self.kept.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def build(watchers: int, sink_port: int) -> int:
    """Users, a space they may all view, one page they all watch, and an SMTP server pointing at the sink."""
    from sqlalchemy import insert

    from webapp.auth.models import User
    from webapp.auth.services import create_user
    from webapp.content.services import create_page
    from webapp.extensions import db
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


RAW_SENDER = """
import pickle, smtplib, sys
mails = pickle.load(open(sys.argv[1], "rb"))
with smtplib.SMTP("127.0.0.1", int(sys.argv[2])) as conn:
    print("ready", flush=True)
    sys.stdin.readline()
    for sender, recipients, data in mails:
        conn.sendmail(sender, recipients, data)
"""


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes and the children they waited for (a work horse), from /proc."""
    total = 0
    for pid in pids:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def raw_smtplib(mails: list[tuple[str, list[str], bytes]], port: int, counter: Counter,
                connections: int) -> tuple[float, float]:
    """The reference: the very mails Spacemail just delivered (envelope and bytes, as the sink received them), sent
    again with raw smtplib over the same number of connections as Spacemail's workers used, each its own process
    (as the workers are), connected and loaded before the clock starts, each sending its share as fast as it goes;
    (seconds, CPU seconds the senders used meanwhile)."""
    procs = []
    for i in range(connections):
        share = WORKDIR / f"b6-raw-{i}.pickle"
        share.write_bytes(pickle.dumps(mails[i::connections]))
        procs.append(subprocess.Popen([sys.executable, "-c", RAW_SENDER, str(share), str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    for proc in procs:
        assert proc.stdout.readline().strip() == b"ready"
    before, cpu = counter.count, cpu_seconds([proc.pid for proc in procs])
    started = time.perf_counter()
    for proc in procs:
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    while counter.count - before < len(mails):
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds([proc.pid for proc in procs]) - cpu
    for proc in procs:
        proc.stdin.close()
        if proc.wait(timeout=60):
            raise RuntimeError("a raw smtplib sender failed")
    return elapsed, cpu


def _signed_in(app):
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    assert client.post("/login", data={"login": "author", "password": PASSWORD, "csrf_token": token}).status_code == 302
    return client


def _save(client, page_id: int, version: int) -> float:
    """Milliseconds for one page save request."""
    form = client.get(f"/spaces/BENCH/pages/{page_id}/edit").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    started = time.perf_counter()
    response = client.post(f"/spaces/BENCH/pages/{page_id}/edit", data={
        "csrf_token": token, "title": "Runbook", "body": f"v{version + 1}", "version": version})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 302:
        raise RuntimeError(f"the page save answered {response.status_code}")
    return elapsed


def one_run(i: int, watchers: int, workers: int, saves: int, sink_port: int, counter: Counter,
            redis_url: str) -> tuple[list[float], float, float]:
    """(save times in ms, seconds from the notifying save until the sink holds every mail, CPU seconds the workers
    used meanwhile: the fan-out and the sending)."""
    from redis import Redis

    from webapp import create_app
    from webapp.extensions import db

    # Each run starts from an empty Redis. The last run's workers were stopped with a wake-up job maybe taken off
    # the queue and not yet run (RQ keeps it aside until its own maintenance), and its "a sender is waking" mark
    # would hold this run's wake-ups for five minutes: in production the scheduler's minute sweep clears both.
    Redis.from_url(redis_url).flushall()
    url = sqlite_url(f"b6-{i}")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url, "RQ_QUEUE": "spacemail",
                      "BASE_URL": "https://spacemail.example.org", "PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})
    with app.app_context():
        page_id = build(watchers, sink_port)
    client = _signed_in(app)
    times = [_save(client, page_id, v) for v in range(1, saves + 1)]
    with app.app_context():
        from webapp.notify.models import ContentEvent
        from webapp.settings import SiteSettings

        db.session.execute(db.delete(ContentEvent))  # the coalesced timing saves are not the measured run
        SiteSettings.get().notify_coalesce_minutes = 0
        db.session.commit()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": url, "SPACEMAIL_REDIS_URL": redis_url}
    log = open(WORKDIR / f"b6-workers-{i}.log", "wb")
    procs = [subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "-w", "workers.worker.WarmWorker", "-u",
                               redis_url, "spacemail"], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT) for _ in range(workers)]
    try:
        time.sleep(3)  # workers up
        before, cpu = counter.count, cpu_seconds([proc.pid for proc in procs])
        started = time.perf_counter()
        _save(client, page_id, saves + 1)
        while counter.count - before < watchers:
            if time.perf_counter() - started > 900:
                raise RuntimeError(f"only {counter.count - before} of {watchers} mails after 15 minutes")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        return times, elapsed, cpu_seconds([proc.pid for proc in procs]) - cpu
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        with app.app_context():
            db.engine.dispose()


def run(watchers: int, runs: int, workers: int = 2, saves: int = 20) -> list[Result]:
    from aiosmtpd.controller import Controller

    redis_proc, redis_url = start_redis()
    counter = Counter()
    sink_port = free_port()
    controller = Controller(counter, hostname="127.0.0.1", port=sink_port)
    controller.start()
    # The sink runs in this process, which keeps every mail Spacemail sent for the reference to send again: the
    # collector's full passes over those (0.11-0.14 s each, traced) stopped the sink in the middle of Spacemail's
    # run only, while the list grew. Reference counting frees the sink's own garbage; the collector waits.
    gc.disable()
    try:
        save_ms, ours, theirs, our_cpu, their_cpu = [], [], [], [], []
        for i in range(runs):
            say(f"B6 run {i + 1}/{runs}: {watchers:,} notifications with {workers} workers, then raw smtplib")
            counter.kept, counter.keeping = [], True
            times, seconds, cpu = one_run(i, watchers, workers, saves, sink_port, counter, redis_url)
            counter.keeping = False
            save_ms += times
            ours.append(watchers / seconds)
            our_cpu.append(cpu / watchers * 1e6)
            if len(counter.kept) != watchers:
                raise RuntimeError(f"the sink kept {len(counter.kept)} mails, not {watchers}")
            seconds, cpu = raw_smtplib(counter.kept, sink_port, counter, workers)
            theirs.append(watchers / seconds)
            their_cpu.append(cpu / watchers * 1e6)
            counter.kept = []
    finally:
        gc.enable()
        controller.stop()
        redis_proc.terminate()
        redis_proc.wait()
    b6 = Result("B6", f"{watchers:,} notifications (one page, {watchers:,} watchers) from the page save to the sink, "
                      f"{workers} workers", median(ours), "mails/s", ours,
                f"raw smtplib sending the same mails (as the sink received them) to the same sink over {workers} "
                f"connections (one process each, as many as the workers)",
                median(theirs), theirs)
    b6.ratio = b6.figure / b6.reference_figure
    b6.goal, b6.met = "ratio ≥ 0.9", b6.ratio >= 0.9
    b6.note = (f"all {watchers:,} at the sink {watchers / b6.figure:.1f} s after the save (median); CPU a mail "
               f"(median): {median(our_cpu):.0f} µs in the workers (fan-out and sending), {median(their_cpu):.0f} µs "
               f"in raw smtplib's senders")
    save = Result("B6 save", f"the page save itself with {watchers:,} watchers: p95 over {len(save_ms)} saves",
                  p95(save_ms), "ms", [median(save_ms)], goal="≤ 50 ms", met=p95(save_ms) <= 50,
                  note=f"median {median(save_ms):.1f} ms")
    return [b6, save]


SINK = """
import sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1])).start()
while True:
    time.sleep(60)
"""


PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def sender_memory(queued: int = 100_000) -> Result:
    """B6 memory: one real worker (the Procfile's WarmWorker, burst) sends `queued` mails waiting in the mail queue
    to a sink in its own process; the figure is the peak RSS of the worker (which runs the sending job itself) and
    of any work horse (RUSAGE_CHILDREN of a launcher, see PEAK)."""
    from sqlalchemy import insert

    from webapp import create_app
    from webapp.extensions import db
    from webapp.jobs import DELIVER_DUE, get_queue
    from webapp.outgoing.compose import new_message_id
    from webapp.outgoing.models import OutboundMail
    from webapp.outgoing.servers import ServerData, create_server
    from webapp.timeutil import utcnow

    redis_proc, redis_url = start_redis()
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)])
    url = sqlite_url("b6-memory")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url, "RQ_QUEUE": "spacemail"})
    body = "A line of a notification about a page that changed, with its diff.\n" * 30
    try:
        with app.app_context():
            db.create_all()
            create_server(ServerData("Sink", "spacemail@example.org", "${fullname} (Spacemail)", "[Bench]",
                                     "127.0.0.1", sink_port, "none", "", "", 30, "none", ""))
            now = utcnow()
            for start in range(0, queued, 10_000):
                db.session.execute(insert(OutboundMail), [
                    {"recipient": f"w{i}@example.org", "subject": "Bench › Runbook", "body_text": body,
                     "body_html": f"<p>{body}</p>", "headers": {}, "kind": "notification",
                     "message_id": new_message_id("spacemail.example.org"), "next_attempt_at": now, "created_at": now}
                    for i in range(start, min(start + 10_000, queued))])
            db.session.commit()
            get_queue().enqueue(DELIVER_DUE, job_timeout=3600)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": url, "SPACEMAIL_REDIS_URL": redis_url}
        started = time.perf_counter()
        # Through a small launcher: Linux carries the peak RSS of the process that starts another across its exec,
        # so the worker started from here would report this process's peak (the 100,000 rows it wrote), not its own.
        out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "rq.cli", "worker", "--burst", "-w",
                              "workers.worker.WarmWorker", "-u", redis_url, "spacemail"],
                             cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        seconds = time.perf_counter() - started
        with app.app_context():
            sent = db.session.scalar(db.select(db.func.count(OutboundMail.id)).where(OutboundMail.state == "sent"))
        if sent != queued:
            raise RuntimeError(f"{sent:,} of {queued:,} mails sent")
        peak = int(out.split()[-1]) / 1024
    finally:
        sink.terminate()
        redis_proc.terminate()
    return Result("B6 memory", f"one worker sending {queued:,} queued mails (all sent, {queued / seconds:,.0f} mails/s "
                               f"to a sink in its own process): peak RSS of the worker, which sends in its own "
                               f"process (and of any work horse)",
                  peak, "MB", [peak], goal="≤ 200 MB", met=peak <= 200)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        print(sender_memory(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000))
        sys.exit()
    for result in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, 1):
        print(result)
