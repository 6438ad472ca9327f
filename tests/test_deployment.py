"""Spacemail as production runs it: the web server and two workers on three hosts, one PostgreSQL and one Redis.

The hosts are network namespaces on one bridge (tests/deployment.py); PostgreSQL, Redis, Dovecot and an SMTP
sink of the test's own listen on the bridge, never on loopback. Each host runs the real processes (gunicorn,
`rq worker --with-scheduler`, and on one of them the one `rq cron`), with the same keys in its environment. A
person uses the web host over HTTP; the mail they see was fetched by a worker on another host.
"""
import http.cookiejar
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from sqlalchemy import create_engine, func, select, text

from tests.archive.helpers import message
from tests.conftest import PASSWORD, ROOT, TEST_KEY, free_port, wait_for_port
from tests.deployment import Link, Postgres, RedisServer, can_make_namespaces
from tests.mailservers import make_ca, start_dovecot
from tests.smtpsinks import Sink

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(600)]
VENV = ROOT / ".venv" / "bin"


class Browser:
    """A person at the web host, over HTTP with cookies (the same forms and CSRF tokens a browser sends)."""

    def __init__(self, base: str) -> None:
        self.base, self.jar = base, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.token = ""

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            page = response.read().decode()
        found = re.search(r'"X-CSRFToken": "([^"]+)"', page) or re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                                                                         page)
        self.token = found.group(1) if found else self.token
        return page

    def post(self, path: str, data: dict | None = None, timeout: float = 30) -> str:
        body = urllib.parse.urlencode({"csrf_token": self.token, **(data or {})}).encode()
        with self.opener.open(self.base + path, body, timeout=timeout) as response:
            return response.read().decode()


def wait_until(condition, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("deployment")
    link = Link()
    services = []
    try:
        hosts = {name: link.add_host(name) for name in ("web", "w1", "w2")}
        pg = Postgres(link.address, link.net)
        services.append(pg)
        redis = RedisServer(link.address)
        services.append(redis)
        ca = make_ca(ips=("127.0.0.1", link.address))
        dovecot = start_dovecot(ca=ca, listen=link.address)
        services.append(dovecot)
        sink = Sink(ca, host=link.address)
        services.append(sink)
        env = {"PATH": f"{VENV}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp), "FLASK_APP": "wsgi",
               "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": pg.url, "SPACEMAIL_REDIS_URL": redis.url,
               "SPACEMAIL_SECRET_KEY": "deployment-test-secret", "SPACEMAIL_ENCRYPTION_KEYS": TEST_KEY,
               "SPACEMAIL_FETCH_BATCH_SIZE": "20", "SPACEMAIL_FETCH_LEASE_SECONDS": "6",
               "SPACEMAIL_MAIL_SENDING_TIMEOUT_SECONDS": "10", "SPACEMAIL_MAIL_MARK_EVERY": "10",
               "SPACEMAIL_BASE_URL": f"http://{hosts['web']}:8000"}
        migrate = subprocess.run([str(VENV / "flask"), "db", "upgrade"], cwd=ROOT, capture_output=True,
                                               text=True, env={**env, "SPACEMAIL_INSTANCE_DIR": str(tmp / "admin")})
        assert migrate.returncode == 0, migrate.stderr
        for name in hosts:
            (tmp / name).mkdir()
        port = free_port()
        rq = str(VENV / "rq")
        specs = {  # process -> (host, command): what systemd would run on each
            "web": ("web", [str(VENV / "gunicorn"), "-w", "2", "-b", f"{hosts['web']}:{port}", "wsgi:app"]),
            # (no fixed -n name: a killed worker's name stays registered in Redis for minutes, and a worker
            # restarted under it refuses to start)
            **{name: (name, [rq, "worker", "--with-scheduler", "-w", "workers.worker.WarmWorker", "-c",
                                 "workers.rq_settings", "spacemail"])
               for name in ("w1", "w2")},
            "cron": ("w2", [rq, "cron", "-c", "workers.rq_settings", "workers.cron"]),
        }
        procs = {}

        def start(name):
            host, command = specs[name]
            procs[name] = link.run(host, command, {**env, "SPACEMAIL_INSTANCE_DIR": str(tmp / host)},
                                   tmp / f"{name}.log", cwd=ROOT)

        def stop(name, grace: float):
            """SIGTERM, then SIGKILL after `grace` seconds (systemd's TimeoutStopSec)."""
            proc = procs.pop(name)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

        for name in specs:
            start(name)
        wait_for_port(port, timeout=30, host=hosts["web"])
        engine = create_engine(pg.url)
        yield {"link": link, "hosts": hosts, "env": env, "tmp": tmp, "dovecot": dovecot, "sink": sink, "ca": ca,
               "engine": engine, "base": f"http://{hosts['web']}:{port}", "pg": pg, "start": start, "stop": stop,
               "port": port}
        engine.dispose()
    finally:
        link.cleanup()
        for service in reversed(services):
            service.stop()


def _app(site):
    """The app as an administrator's shell on the database host sees it (to set up what the test needs)."""
    os.environ.setdefault("SPACEMAIL_INSTANCE_DIR", str(site["tmp"] / "admin"))
    from webapp import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": site["env"]["SPACEMAIL_DATABASE_URL"],
                       "REDIS_URL": site["env"]["SPACEMAIL_REDIS_URL"], "SECRET_KEY": "deployment-test-secret",
                       "ENCRYPTION_KEYS": [TEST_KEY], "BASE_URL": site["env"]["SPACEMAIL_BASE_URL"],
                       "PASSWORD_HASH_METHOD": "scrypt:1024:8:1"})


@pytest.fixture(scope="module")
def team(site):
    """A space admin, a TEAM space and its IMAPS account on the shared Dovecot."""
    from tests.archive.helpers import account_data
    from webapp.archive.services import create_account
    from webapp.auth.services import create_user
    from webapp.extensions import db
    from webapp.settings import SiteSettings
    from webapp.spaces.services import create_site_space

    app = _app(site)
    username, password = site["dovecot"].add_user()
    with app.app_context():
        SiteSettings.get().mail_host_allowlist = site["link"].address
        admin = create_user("ann", "ann@example.org", "Ann", PASSWORD, is_admin=True)
        space = create_site_space(admin, "TEAM", "Team")
        db.session.commit()
        account = create_account(space, account_data(site["dovecot"], "imaps", username, password,
                                                     host=site["link"].address))
        db.session.commit()
        account_id = account.id
    browser = Browser(site["base"])
    browser.get("/login")
    browser.post("/login", {"login": "ann", "password": PASSWORD})
    yield {"app": app, "username": username, "account_id": account_id, "browser": browser}
    with app.app_context():  # before the database goes away
        db.session.remove()
        db.engine.dispose()


def archived(site) -> int:
    with site["engine"].connect() as conn:
        return conn.execute(text("SELECT count(*) FROM archive_messages")).scalar()


def fetched_by(site, run_id: int) -> list[str]:
    """The hosts whose worker started the fetch job of this run (each worker logs the jobs it takes)."""
    return [name for name in ("w1", "w2") if f"fetch-run-{run_id})" in (site["tmp"] / f"{name}.log").read_text()]


def latest_run(site) -> tuple[int, str]:
    with site["engine"].connect() as conn:
        return conn.execute(text("SELECT id, state FROM fetch_runs ORDER BY id DESC LIMIT 1")).one()


def test_mail_fetched_on_one_host_is_read_through_the_web_on_another(site, team):
    subjects = [f"Deployment note {i}" for i in range(40)]
    site["dovecot"].deliver(team["username"], [message(i, subject=s) for i, s in enumerate(subjects)])
    team["browser"].get("/spaces/TEAM/mail-accounts")
    team["browser"].post("/spaces/TEAM/mail/fetch")
    wait_until(lambda: archived(site) == 40, 60, "the 40 messages in the archive")
    run_id, _ = latest_run(site)
    wait_until(lambda: latest_run(site)[1] == "done", 30, "the fetch to finish")
    assert len(fetched_by(site, run_id)) == 1  # one worker, on a host other than the web's
    assert site["dovecot"].mailbox_files(team["username"]) == []  # removed from the server once archived
    page = team["browser"].get("/spaces/TEAM/mail")
    assert "Deployment note 39" in page and "Deployment note 0" in page


def test_a_queued_mail_is_sent_once_by_whichever_worker_claims_it(site, team):
    from webapp.extensions import db
    from webapp.outgoing.models import OutboundMail
    from webapp.outgoing.queue import queue_mail
    from webapp.outgoing.servers import ServerData, create_server

    with team["app"].app_context():
        create_server(ServerData("Relay", "site@example.org", "", "", site["link"].address, site["sink"].port,
                                 "none", "", "", 10, "none", ""))
        db.session.commit()
        for i in range(30):
            queue_mail(f"reader{i}@example.org", f"Across hosts {i}", "Sent by a worker host.")
        db.session.commit()
    wait_until(lambda: len(site["sink"].messages) >= 30, 60, "30 mails at the sink")
    time.sleep(1)
    recipients = [r for m in site["sink"].messages for r in m.rcpt_tos]
    assert sorted(recipients) == sorted(f"reader{i}@example.org" for i in range(30))  # each exactly once
    with team["app"].app_context():
        states = db.session.execute(select(OutboundMail.state, func.count()).group_by(OutboundMail.state)).all()
    assert dict(states) == {"sent": 30}


def test_restarting_every_process_mid_fetch_and_mid_send_loses_no_mail(site, team):
    """An upgrade's restart, done roughly: every process stopped (SIGTERM, SIGKILL 1 s later) while a fetch and a
    send are under way, then started again. Every message is archived once and every mail sent; a mail may go
    out twice only if its sent mark was not yet committed (at most MAIL_MARK_EVERY a sender)."""
    from webapp.extensions import db
    from webapp.outgoing.models import OutboundMail
    from webapp.outgoing.queue import queue_mail

    already, sent_before = archived(site), len(site["sink"].messages)
    site["dovecot"].deliver(team["username"], [message(5000 + i, subject=f"Restart {i}") for i in range(3000)])
    with team["app"].app_context():
        for i in range(300):
            queue_mail(f"restart{i}@example.org", f"During the restart {i}", "Queued before the restart.")
        db.session.commit()
    team["browser"].post("/spaces/TEAM/mail/fetch")
    wait_until(lambda: archived(site) >= already + 40, 60, "the fetch under way")
    for name in ("web", "cron", "w1", "w2"):
        site["stop"](name, grace=1)
    cut_at = archived(site) - already
    for name in ("web", "w1", "w2", "cron"):
        site["start"](name)
    wait_for_port(site["port"], timeout=30, host=site["hosts"]["web"])
    time.sleep(7)  # a fetch cut short holds its lease until it runs out (6 s)
    team["browser"].get("/login")
    team["browser"].post("/login", {"login": "ann", "password": PASSWORD})  # (sessions survive; signing in is cheap)
    team["browser"].post("/spaces/TEAM/mail/fetch", timeout=150)
    wait_until(lambda: archived(site) == already + 3000, 180, "every message archived", every=0.5)
    wait_until(lambda: len({r for m in site["sink"].messages[sent_before:] for r in m.rcpt_tos}) == 300, 120,
               "every mail sent", every=0.5)
    with site["engine"].connect() as conn:
        doubles = conn.execute(text("SELECT count(*) FROM (SELECT message_id_header FROM archive_messages "
                                    "GROUP BY message_id_header HAVING count(*) > 1) d")).scalar()
    assert doubles == 0 and 0 < cut_at < 3000
    recipients = [r for m in site["sink"].messages[sent_before:] for r in m.rcpt_tos]
    assert len(recipients) - 300 <= 2 * 10  # resent only what was unmarked when the senders were killed
    with team["app"].app_context():
        waiting = db.session.scalar(select(func.count()).select_from(OutboundMail).where(OutboundMail.state != "sent"))
    assert waiting == 0
    assert site["dovecot"].mailbox_files(team["username"]) == []


def test_killing_the_fetching_host_loses_nothing_and_the_other_finishes(site, team):
    total = 1500
    already = archived(site)
    site["dovecot"].deliver(team["username"], [message(1000 + i, subject=f"Bulk {i}") for i in range(total)])
    team["browser"].get("/spaces/TEAM/mail-accounts")
    team["browser"].post("/spaces/TEAM/mail/fetch")
    run_id = wait_until(lambda: latest_run(site)[0] if latest_run(site)[1] == "running" else None, 60,
                        "the fetch to start")
    wait_until(lambda: archived(site) >= already + 100, 60, "the first batches")
    victim = wait_until(lambda: (fetched_by(site, run_id) or [None])[0], 10, "the fetching host")
    survivor = "w2" if victim == "w1" else "w1"
    site["link"].kill_host(victim)
    cut_at = archived(site) - already
    assert 0 < cut_at < total, "the fetch finished before the host could be killed"
    time.sleep(7)  # the dead worker's lease (6 s) runs out
    # The person tries again. The dead host's database session still holds its batch's row locks until
    # PostgreSQL's keepalive probes find it gone (Spacemail asks for them: about a minute), so this may wait.
    started = time.monotonic()
    team["browser"].post("/spaces/TEAM/mail/fetch", timeout=150)
    assert time.monotonic() - started < 120
    try:
        wait_until(lambda: archived(site) == already + total, 150, "every message archived", every=0.5)
    except AssertionError:
        with site["engine"].connect() as conn:
            sessions = conn.execute(text("SELECT client_addr, state, wait_event_type, left(query, 80) FROM "
                                         "pg_stat_activity WHERE datname = 'spacemail'")).all()
        raise AssertionError(f"{archived(site) - already} of {total} archived; sessions: {sessions}") from None
    new_run, _ = latest_run(site)
    wait_until(lambda: latest_run(site)[1] == "done", 60, "the second fetch to finish")
    assert new_run != run_id and fetched_by(site, new_run) == [survivor]
    with site["engine"].connect() as conn:
        doubles = conn.execute(text("SELECT count(*) FROM (SELECT message_id_header FROM archive_messages "
                                    "GROUP BY message_id_header HAVING count(*) > 1) d")).scalar()
        abandoned = conn.execute(text("SELECT error_class FROM fetch_runs WHERE id = :id"), {"id": run_id}).scalar()
    assert doubles == 0 and abandoned == "abandoned"
    assert site["dovecot"].mailbox_files(team["username"]) == []
    page = team["browser"].get("/spaces/TEAM/mail?q=bulk")
    assert "Bulk" in page
