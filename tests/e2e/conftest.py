"""Browser journeys: the app served on a free port, Playwright driving Debian's chromium."""
import threading

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"


# Werkzeug's development server (only the tests use it; production runs gunicorn) leaves a static file open
# when the browser drops the request for it mid-way, e.g. the favicon while a journey navigates on.
STATIC_FILE_LEFT_OPEN = [
    pytest.mark.filterwarnings(r"ignore:unclosed file <_io.BufferedReader name='[^']*/static/:ResourceWarning"),
    pytest.mark.filterwarnings(r"ignore:Exception ignored in. <_io.FileIO name='[^']*/static/"
                               r":pytest.PytestUnraisableExceptionWarning"),
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            for mark in STATIC_FILE_LEFT_OPEN:
                item.add_marker(mark)


# The SQLite and PostgreSQL suites run side by side on two cores: an answer that takes one second alone can take
# several. A journey's waits are for what a user would wait for, so they may take longer than Playwright's 5 s
# default; a wrong page still fails, only later.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Playwright cannot download its own browsers here: use the distribution's chromium.
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"],
    }


@pytest.fixture
def live_server(app):
    """Serve `app` (its fresh database) from a thread; yields the base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def console_errors(page):
    """Collects console errors (CSP violations show up here) so a journey can assert there are none."""
    errors = []
    page.on("console", lambda msg: errors.append(f"{msg.text} @ {msg.location}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.fixture
def worker_process(app, tmp_path):
    """A real `rq worker` process on the test's Redis and database, as production runs it."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, TEST_KEY

    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACEMAIL_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "SPACEMAIL_REDIS_URL": app.config["REDIS_URL"], "SPACEMAIL_ENCRYPTION_KEYS": TEST_KEY,
           "SPACEMAIL_SECRET_KEY": "test", "SPACEMAIL_INSTANCE_DIR": str(tmp_path),
           "SPACEMAIL_OAUTH_ALLOW_HTTP_LOOPBACK": "1"}  # the tests' own authorization server is on loopback
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--with-scheduler", "-u", app.config["REDIS_URL"],
                             app.config["RQ_QUEUE"]], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
