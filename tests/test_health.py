"""`flask doctor` and Administration › System health: each check is made to fail for real, then to pass."""
import json
import os
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.cron import CronScheduler
from sqlalchemy import text

from tests.conftest import ROOT, TEST_KEY, free_port
from webapp import health
from webapp.outgoing.servers import ServerData, create_server


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def check(app, name):
    with app.app_context():
        return by_name(health.run_checks())[name]


@pytest.fixture
def redis(app):
    return Redis.from_url(app.config["REDIS_URL"])


def test_keys_generated_on_this_host_are_a_warning_and_set_ones_are_fine(app):
    app.config["KEY_SOURCES"] = {"secret_key": "instance", "encryption_keys": "environment"}
    keys = check(app, "Keys")
    assert keys.status == health.WARN and "generated on this host (secret_key" in keys.found
    assert "SPACEMAIL_SECRET_KEY" in keys.fix
    app.config["KEY_SOURCES"] = {"secret_key": "environment", "encryption_keys": "environment"}
    keys = check(app, "Keys")
    assert keys.status == health.OK
    assert health.fingerprint(app.config["SECRET_KEY"]) in keys.found and app.config["SECRET_KEY"] not in keys.found


def test_a_host_with_other_keys_fails_the_keys_check(app, redis):
    """A worker host reports its fingerprints as it runs jobs; one with other keys is named."""
    app.config["KEY_SOURCES"] = {"secret_key": "environment", "encryption_keys": "environment"}
    with app.app_context():
        mine = health.fingerprints()
    redis.hset(health.HOSTS_KEY, "worker-a (worker)", json.dumps({**mine, "seen": time.time()}))
    assert check(app, "Keys").status == health.OK
    assert "the same on every host" in check(app, "Keys").found
    redis.hset(health.HOSTS_KEY, "worker-b (worker)", json.dumps(
        {"secret_key": health.fingerprint("another"), "encryption_keys": mine["encryption_keys"], "seen": time.time()}))
    keys = check(app, "Keys")
    assert keys.status == health.FAIL and "worker-b (worker)" in keys.found and "worker-a" not in keys.found
    redis.hset(health.HOSTS_KEY, "worker-b (worker)", json.dumps(  # not heard from for two days: forgotten
        {"secret_key": "x", "encryption_keys": "y", "seen": time.time() - 2 * 86400}))
    assert check(app, "Keys").status == health.OK


def test_a_worker_running_a_job_reports_its_host(app, redis, monkeypatch):
    from workers import job

    monkeypatch.setattr(health, "_last_report", 0.0)
    mine = health.fingerprints()

    @job
    def nothing():
        return None

    nothing()
    reports = {k.decode(): json.loads(v) for k, v in redis.hgetall(health.HOSTS_KEY).items()}
    assert any(name.endswith("(worker)") and data["secret_key"] == mine["secret_key"]
               for name, data in reports.items())


def test_base_url_without_https_is_a_warning(app):
    app.config["BASE_URL"] = "http://spacemail.test"
    assert check(app, "Base URL").status == health.WARN
    app.config["BASE_URL"] = "https://spacemail.example"
    assert check(app, "Base URL").status == health.OK


def test_schema_behind_the_code_fails(app, db):
    db.session.execute(text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
    db.session.execute(text("DELETE FROM alembic_version"))
    db.session.execute(text("INSERT INTO alembic_version VALUES ('0015')"))
    db.session.commit()
    schema = check(app, "Database schema")
    assert schema.status == health.FAIL and "0015" in schema.found and "flask db upgrade" in schema.fix
    with app.app_context():
        head = health._migration_head()
    db.session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    db.session.commit()
    assert check(app, "Database schema").status == health.OK


def test_an_unreachable_database_fails(tmp_path, redis_server):
    from webapp import create_app

    port = free_port()  # nothing listens there
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "ENCRYPTION_KEYS": [TEST_KEY], "REDIS_URL": redis_server,
                      "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"})
    with app.app_context():
        database = by_name(health.run_checks())["Database"]
    assert database.status == health.FAIL and "SPACEMAIL_DATABASE_URL" in database.fix


def test_database_engine_notes(app, db, monkeypatch):
    if db.engine.dialect.name == "sqlite":
        assert check(app, "Database").status == health.WARN  # one machine only
        assert check(app, "Disk space").status == health.OK
        monkeypatch.setattr(health, "SQLITE_FREE_BYTES", 10 ** 18)  # a disk this full cannot be made here
        disk = check(app, "Disk space")
        assert disk.status == health.FAIL and "GB free" in disk.found
    else:
        assert check(app, "Database").status == health.OK
        autovacuum = db.session.execute(text("SHOW autovacuum")).scalar()
        names = set(by_name(_all(app)))
        assert ("PostgreSQL autovacuum" in names) == (autovacuum != "on")


def _all(app):
    with app.app_context():
        return health.run_checks()


def test_redis_without_persistence_warns_and_unreachable_fails(app, redis, redis_server):
    redis.config_set("appendonly", "no")
    assert check(app, "Redis persistence").status == health.WARN
    redis.config_set("appendonly", "yes")
    try:
        assert check(app, "Redis persistence").status == health.OK
    finally:
        redis.config_set("appendonly", "no")
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("spacemail.redis", None)
    try:
        redis_check = check(app, "Redis")
        assert redis_check.status == health.FAIL and "SPACEMAIL_REDIS_URL" in redis_check.fix
    finally:
        app.config["REDIS_URL"] = redis_server
        app.extensions.pop("spacemail.redis", None)


def test_workers_and_exactly_one_scheduler(app, redis):
    workers = check(app, "Workers")
    assert workers.status == health.FAIL and "rq worker" in workers.fix
    worker = Worker([Queue("spacemail", connection=redis)], connection=redis)
    worker.register_birth()
    try:
        assert check(app, "Workers").status == health.OK
    finally:
        worker.register_death()
    assert check(app, "Scheduler").status == health.FAIL and "none" in check(app, "Scheduler").found
    first, second = CronScheduler(connection=redis), CronScheduler(connection=redis)
    first.register_birth()
    try:
        assert check(app, "Scheduler").status == health.OK
        second.register_birth()
        two = check(app, "Scheduler")
        assert two.status == health.FAIL and "2 running" in two.found and "exactly one" in two.fix
        second.register_death()
    finally:
        first.register_death()


def test_no_smtp_server_is_a_warning(app, db):
    assert check(app, "Outgoing mail").status == health.WARN
    create_server(ServerData("SMTP", "site@example.org", "", "", "smtp.example.org", 587, "starttls", "", "", 30,
                             "none", ""))
    db.session.commit()
    assert check(app, "Outgoing mail").status == health.OK


def test_the_page_shows_every_check_to_system_admins(client, login, make_user, app):
    login(make_user("root", admin=True))
    page = client.get("/admin/system").get_data(as_text=True)
    assert "System health" in page
    for name in ("Keys", "Base URL", "Database schema", "Redis persistence", "Workers", "Scheduler",
                 "Outgoing mail"):
        assert f'<th scope="row">{name}</th>' in page
    assert "Failing" in page and "rq worker --with-scheduler" in page  # no worker in the tests
    assert app.config["SECRET_KEY"] not in page


def test_flask_doctor_prints_each_problem_and_exits_1_on_a_failure(tmp_path, redis_server):
    Redis.from_url(redis_server).flushall()  # no host reports left by other tests
    env = {**os.environ, "FLASK_APP": "wsgi", "SPACEMAIL_INSTANCE_DIR": str(tmp_path),
           "SPACEMAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "SPACEMAIL_REDIS_URL": redis_server}
    upgrade = subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
    assert upgrade.returncode == 0, upgrade.stderr
    out = subprocess.run([sys.executable, "-m", "flask", "doctor"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "ok    Database schema: migrated" in out.stdout
    assert "FAIL  Workers: none alive" in out.stdout and "→ Start at least one" in out.stdout
    assert "WARN  Keys:" in out.stdout and "generated on this host" in out.stdout
    quiet = subprocess.run([sys.executable, "-m", "flask", "doctor", "--quiet"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert "Database schema" not in quiet.stdout and "FAIL  Scheduler" in quiet.stdout
