"""Shared fixtures: real redis-server, a fresh database per test, signed-in clients, a real RQ worker."""
import atexit
import os
import re
import shutil
import sqlite3
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

_INSTANCE = tempfile.mkdtemp(prefix="spacemail-test-instance-")
atexit.register(shutil.rmtree, _INSTANCE, True)
os.environ["SPACEMAIL_INSTANCE_DIR"] = _INSTANCE  # before webapp is imported

from flask.testing import FlaskClient  # noqa: E402
from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.archive import search  # noqa: E402
from webapp.extensions import db as _db  # noqa: E402

TEST_KEY = "n7Zb7bJyIoxyw7n3ZxQJ1w0tJx1Q0sHkqJ2ZfQ0Xb0M="
PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server of our own on a free loopback port, stopped at the end."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run ./scripts/test, which installs it"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="spacemail-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _postgres_url() -> str | None:
    return os.environ.get("SPACEMAIL_TEST_POSTGRES_URL") if os.environ.get("SPACEMAIL_TEST_DB") == "postgres" else None


@pytest.fixture(scope="session")
def postgres_database():
    """With SPACEMAIL_TEST_DB=postgres: a throwaway database on the given server for this session."""
    server = _postgres_url()
    if server is None:
        yield None
        return
    name = f"spacemail_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database_url(tmp_path, postgres_database) -> str:
    if postgres_database:
        return postgres_database
    return f"sqlite:///{tmp_path / 'spacemail.db'}"


@pytest.fixture
def app(tmp_path, redis_server, postgres_database):
    """The app on a fresh database (every table empty but the settings row) and an empty Redis."""
    app = create_app(_app_config(database_url(tmp_path, postgres_database), redis_server, bool(postgres_database)))
    with app.app_context():
        _fresh_start(redis_server, postgres_database)
        yield app
        _db.session.remove()
        _db.engine.dispose()


def _app_config(url: str, redis_server: str, postgres: bool) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": url,
        "REDIS_URL": redis_server,
        "RQ_QUEUE": "spacemail",
        "ENCRYPTION_KEYS": [TEST_KEY],
        "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
        "BASE_URL": "http://spacemail.test",
        # Tests do not pull the power cord: skip the database's wait for the disk on each commit.
        "SQLITE_SYNCHRONOUS": "OFF",
        **({"SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True,
                                          "connect_args": {"options": "-c synchronous_commit=off"}}}
           if postgres else {}),
    }


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory, redis_server, postgres_database):
    """One app for a module's hundreds of small cases (the permission and CSRF matrices): made once, on a fresh
    database, with an empty Redis. Each case puts the database back with a DatabaseImage (a new app and schema
    per case was three quarters of the matrices' time)."""
    url = postgres_database or f"sqlite:///{tmp_path_factory.mktemp('shared') / 'spacemail.db'}"
    app = create_app(_app_config(url, redis_server, bool(postgres_database)))
    with app.app_context():
        _fresh_start(redis_server, postgres_database)
    yield app
    with app.app_context():
        _db.session.remove()
        _db.engine.dispose()


def shared_make_user(username, *, admin=False):
    """make_user for a shared_app (inside its app context)."""
    from webapp.auth.services import create_user

    user = create_user(username, f"{username}@example.org", username.title(), PASSWORD, is_admin=admin)
    _db.session.commit()
    return user


class DatabaseImage:
    """Every row of a small test database, taken once and put back in milliseconds: SQLite's whole file through
    its backup API (the FTS5 index included); PostgreSQL's tables through COPY (binary), and its sequences."""

    def __init__(self, app) -> None:
        self.app = app
        with app.app_context():
            _db.session.commit()
            self.engine = _db.engine
            self.sqlite = self.engine.dialect.name == "sqlite"
            if self.sqlite:
                self.path = self.engine.url.database
                self.engine.dispose()
                source = sqlite3.connect(self.path)
                self.memory = sqlite3.connect(":memory:")
                source.backup(self.memory)
                source.close()
                return
            self.tables = [t.name for t in _db.metadata.sorted_tables]
            raw = self.engine.raw_connection()
            try:
                cursor = raw.driver_connection.cursor()
                self.rows = {}
                for table in self.tables:
                    with cursor.copy(f'COPY "{table}" TO STDOUT (FORMAT BINARY)') as copy:
                        self.rows[table] = b"".join(bytes(chunk) for chunk in copy)
                self.sequences = cursor.execute(
                    "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
                    "WHERE schemaname = 'public'").fetchall()
                raw.driver_connection.commit()
            finally:
                raw.close()

    def restore(self) -> None:
        with self.app.app_context():
            _db.session.remove()
            if self.sqlite:
                self.engine.dispose()
                target = sqlite3.connect(self.path)
                self.memory.backup(target)
                target.close()
                _forget_caches()
                return
            raw = self.engine.raw_connection()
            try:
                connection = raw.driver_connection
                cursor = connection.cursor()
                cursor.execute("SET session_replication_role = replica")  # no foreign-key triggers while loading
                for table in reversed(self.tables):
                    cursor.execute(f'DELETE FROM "{table}"')
                for table in self.tables:
                    with cursor.copy(f'COPY "{table}" FROM STDIN (FORMAT BINARY)') as copy:
                        copy.write(self.rows[table])
                for name, value in self.sequences:
                    cursor.execute("SELECT setval(%s, %s, %s)", [name, value or 1, value is not None])
                cursor.execute("SET session_replication_role = DEFAULT")
                connection.commit()
            finally:
                raw.close()
            _forget_caches()


def _forget_caches() -> None:
    """What a process keeps between requests (rendered lists, counts), stale once the database is put back."""
    from webapp.archive import read_routes, services

    read_routes._RENDERED.clear()
    services._COUNTS.clear()


def _fresh_start(redis_server: str, postgres_database) -> None:
    """An empty Redis, and every table empty but the settings row (inside the app's context)."""
    from webapp.settings import SiteSettings

    Redis.from_url(redis_server).flushall()
    _fresh_schema(postgres_database)
    SiteSettings.get()
    _db.session.commit()


_postgres_schema_made = set()


def _fresh_schema(postgres_database) -> None:
    """SQLite: a new file each test. PostgreSQL: the tables once per session, then emptied (DELETE on
    tables this small is far faster than DROP/CREATE or TRUNCATE)."""
    if postgres_database and postgres_database in _postgres_schema_made:
        with _db.engine.begin() as conn:
            for table in reversed(_db.metadata.sorted_tables):
                conn.execute(table.delete())
        return
    _db.drop_all()
    _db.create_all()
    with _db.engine.begin() as conn:
        search.create_tables(conn)
    if postgres_database:
        _postgres_schema_made.add(postgres_database)


@pytest.fixture
def db(app):
    return _db


class Client(FlaskClient):
    """A test client that sends the form's CSRF token unless told not to (csrf=False)."""

    token = None

    def open(self, *args, **kwargs):
        # A fresh app context per request, as in production: its own `g` (Flask-Login's cached user,
        # Flask-WTF's token) and its own database session, never the test's.
        with self.application.app_context():
            return super().open(*args, **kwargs)

    def csrf_token(self) -> str:
        if self.token is None:
            page = super().get("/login", follow_redirects=True).get_data(as_text=True)
            self.token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|"X-CSRFToken": "([^"]+)"', page)
            self.token = next(g for g in self.token.groups() if g)
        return self.token

    def post(self, *args, csrf=True, data=None, **kwargs):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf_token())
        response = super().post(*args, data=data, **kwargs)
        if args and str(args[0]).startswith(("/login", "/setup", "/logout", "/invite")):
            self.token = None  # signing in or out starts a new session, with a new CSRF token
        return response

    def htmx_get(self, url, **kwargs):
        return self.get(url, headers={"HX-Request": "true"}, **kwargs)

    def htmx_post(self, url, **kwargs):
        return self.post(url, headers={"HX-Request": "true"}, **kwargs)


@pytest.fixture
def client(app):
    app.test_client_class = Client
    return app.test_client()


@pytest.fixture
def make_user(app):
    """make_user("ann", admin=True) -> a committed User with PASSWORD as password."""
    from webapp.auth.services import create_user

    def make(username, *, admin=False, full_name=None, can_create_spaces=False):
        user = create_user(username, f"{username}@example.org", full_name or username.title(), PASSWORD,
                           is_admin=admin)
        user.can_create_spaces = can_create_spaces
        _db.session.commit()
        return user

    return make


@pytest.fixture
def login(app, client):
    """login(user) signs the test client in through the real sign-in form."""

    def do(user, c=None):
        c = c or client
        c.token = None  # a route may have ended the session (and its CSRF token) since the token was read
        response = c.post("/login", data={"login": user.username, "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)
        c.csrf_token()  # as a browser loads the next page: the new session's CSRF token, before any thread races
        return c

    return do


@pytest.fixture
def run_jobs(app, redis_server):
    """Run every queued job in a real RQ SimpleWorker (burst) against the real redis-server."""

    def run() -> int:
        connection = Redis.from_url(redis_server)
        queue = Queue(app.config["RQ_QUEUE"], connection=connection)
        count = len(queue)
        with app.app_context():  # the worker gets its own session, as a worker process would
            SimpleWorker([queue], connection=connection).work(burst=True)
        _db.session.expire_all()  # the test then reads what the worker wrote
        return count

    return run


def _dovecot(ssl: bool):
    from tests.mailservers import start_dovecot

    server = start_dovecot(ssl=ssl)
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot():
    """Real Dovecot from Debian: IMAP and POP3 with STARTTLS, IMAPS and POP3S, certificate from a test CA."""
    yield from _dovecot(ssl=True)


def _dovecot_with(capability: str):
    from tests.mailservers import start_dovecot

    server = start_dovecot(ssl=True, imap_capability=capability)
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


# Post-login capabilities of a server without UIDPLUS (as GNU Mailutils' imap4d), and of one with MOVE only.
BASIC_IMAP = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE SPECIAL-USE"


@pytest.fixture(scope="session")
def dovecot_no_uidplus():
    """Dovecot that advertises neither UIDPLUS nor MOVE after login."""
    yield from _dovecot_with(BASIC_IMAP)


@pytest.fixture(scope="session")
def dovecot_move_only():
    """Dovecot that advertises MOVE but not UIDPLUS."""
    yield from _dovecot_with(BASIC_IMAP + " MOVE")


@pytest.fixture(scope="session")
def mailutils():
    """GNU Mailutils' imap4d (no UIDPLUS, no MOVE): a second real IMAP server beside Dovecot."""
    from tests.mailutils import start_mailutils

    server = start_mailutils()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_without_tls():
    """A second Dovecot that offers no TLS at all (for "STARTTLS not offered")."""
    yield from _dovecot(ssl=False)


@pytest.fixture(scope="session")
def smtp_sink_servers():
    from tests.smtpsinks import Sinks

    sinks = Sinks()
    yield sinks
    sinks.stop()


@pytest.fixture(scope="session")
def oauth_server():
    """A real OAuth 2.0 authorization server (authlib) on loopback: tests/oauth_server.py."""
    from tests.oauth_server import TestProvider

    server = TestProvider()
    server.client.redirect_uris.add("http://spacemail.test/oauth/callback")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server):
    """Dovecot that also signs in XOAUTH2 and OAUTHBEARER, asking oauth_server about each token."""
    from tests.mailservers import start_dovecot

    server = start_dovecot(ssl=True, introspection_url=oauth_server.base + "/introspect")
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def oauth_dovecot_xoauth2(oauth_server):
    """Dovecot that offers only XOAUTH2 for tokens (as Microsoft's servers do)."""
    from tests.mailservers import start_dovecot

    server = start_dovecot(ssl=True, introspection_url=oauth_server.base + "/introspect", oauth_mechanisms="xoauth2")
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def oauth_smtp_server(oauth_server, smtp_sink_servers):
    """An SMTP sink (STARTTLS) that accepts bearer tokens oauth_server vouches for."""
    from tests.smtpsinks import OAuthRecorder, Sink

    sink = Sink(smtp_sink_servers.ca, security="starttls", auth=True,
                recorder=OAuthRecorder(oauth_server.base + "/introspect"))
    yield sink
    sink.stop()


@pytest.fixture
def oauth_smtp(oauth_smtp_server):
    oauth_smtp_server.recorder.reset()
    yield oauth_smtp_server


@pytest.fixture
def sinks(smtp_sink_servers):
    """Real aiosmtpd sinks (plain, STARTTLS, implicit TLS; with and without AUTH), emptied for each test."""
    smtp_sink_servers.reset()
    yield smtp_sink_servers
    smtp_sink_servers.reset()
