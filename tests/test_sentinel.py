"""Redis behind Sentinel (RQ supports Sentinel, not Redis Cluster): the web, an `rq worker` and rate limits all
find the master through a real Sentinel (redis-server --sentinel) in front of a real redis-server."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import PASSWORD, ROOT, TEST_KEY, Client, _app_config, _fresh_schema, free_port, wait_for_port
from webapp import create_app
from webapp.extensions import db as _db
from webapp.jobs import WORKER_CHECK, JobRun, redis_connection, start_job


@pytest.fixture
def sentinel(redis_server):
    """A Sentinel watching the test Redis as "spacemail-master"."""
    host, port = redis_server.split("//")[1].split("/")[0].split(":")
    workdir = Path(tempfile.mkdtemp(prefix="spacemail-sentinel-"))
    sentinel_port = free_port()
    (workdir / "sentinel.conf").write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor spacemail-master {host} {port} 1\n")
    proc = subprocess.Popen([shutil.which("redis-server"), str(workdir / "sentinel.conf"), "--sentinel"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(sentinel_port)
        yield f"127.0.0.1:{sentinel_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_web_worker_and_rate_limits_reach_redis_through_sentinel(sentinel, redis_server, tmp_path, postgres_database):
    url = postgres_database or f"sqlite:///{tmp_path / 'sentinel.db'}"
    app = create_app({**_app_config(url, "redis://127.0.0.1:1/0", bool(postgres_database)),  # a URL nothing serves
                      "REDIS_SENTINELS": [("127.0.0.1", int(sentinel.rsplit(":", 1)[1]))],
                      "REDIS_SENTINEL_MASTER": "spacemail-master"})
    app.test_client_class = Client
    Redis.from_url(redis_server).flushall()
    with app.app_context():
        _fresh_schema(postgres_database)
        from webapp.auth.services import create_user

        admin = create_user("root", "root@example.org", "Root", PASSWORD, is_admin=True)
        _db.session.commit()
        redis_connection().set("spacemail:sentinel-probe", "yes")
        assert Redis.from_url(redis_server).get("spacemail:sentinel-probe") == b"yes"  # the master it named
        run = start_job("worker-check", WORKER_CHECK, user=admin)
        _db.session.commit()
        run_id = run.id
    env = {**os.environ, "SPACEMAIL_REDIS_SENTINELS": sentinel, "SPACEMAIL_REDIS_SENTINEL_MASTER": "spacemail-master",
           "SPACEMAIL_REDIS_URL": "redis://127.0.0.1:1/0", "SPACEMAIL_DATABASE_URL": url,
           "SPACEMAIL_SECRET_KEY": "test-secret", "SPACEMAIL_ENCRYPTION_KEYS": TEST_KEY,
           "SPACEMAIL_INSTANCE_DIR": str(tmp_path)}
    worker = subprocess.run([str(Path(sys.executable).parent / "rq"), "worker", "-c", "workers.rq_settings", "--burst",
                             "spacemail"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-2000:]
    with app.app_context():
        run = _db.session.get(JobRun, run_id)
        assert run.state == "done" and "reached the database and Redis" in run.message
        client = app.test_client()
        for _ in range(6):  # five failed sign-ins a minute per account: counted in Redis through Sentinel
            response = client.post("/login", data={"login": "root", "password": "wrong password"})
        assert response.status_code == 429
        assert any(key.startswith(b"LIMITS") for key in Redis.from_url(redis_server).keys("*"))
        _db.session.remove()
        _db.engine.dispose()
