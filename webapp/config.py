"""Configuration: defaults, then SPACEMAIL_* environment variables."""
import os
import secrets
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet

INSTANCE_DIR = Path(os.environ.get("SPACEMAIL_INSTANCE_DIR", Path(__file__).resolve().parent.parent / "instance"))


def _instance_secret(name: str, make) -> str:
    """A secret kept in instance/ so a first run works without setup and restarts keep sessions."""
    path = INSTANCE_DIR / name
    if path.exists():
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _env(name: str, default=None):
    return os.environ.get(f"SPACEMAIL_{name}", default)


class Config:
    """Settings read once at start-up; see the configuration table in README.md."""

    def __init__(self) -> None:
        # Where the keys came from: the environment (production, the same on every host) or a file generated in
        # instance/ on first run (one machine); `flask doctor` says which.
        self.KEY_SOURCES = {"secret_key": "environment" if _env("SECRET_KEY") else "instance",
                            "encryption_keys": "environment" if _env("ENCRYPTION_KEYS") else "instance"}
        self.SECRET_KEY = _env("SECRET_KEY") or _instance_secret("secret_key", lambda: secrets.token_urlsafe(48))
        keys = _env("ENCRYPTION_KEYS") or _instance_secret(
            "encryption_keys", lambda: Fernet.generate_key().decode()
        )
        self.ENCRYPTION_KEYS = [k.strip() for k in keys.split(",") if k.strip()]
        self.SQLALCHEMY_DATABASE_URI = _env("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'spacemail.db'}"
        self.REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
        # Redis behind Sentinel (RQ supports Sentinel, not Redis Cluster): "host:26379,host2:26379", the master's
        # name, and its password if it has one; then REDIS_URL is not used.
        self.REDIS_SENTINELS = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in
                                (_env("REDIS_SENTINELS") or "").split(",") if h.strip()]
        self.REDIS_SENTINEL_MASTER = _env("REDIS_SENTINEL_MASTER", "mymaster")
        self.REDIS_PASSWORD = _env("REDIS_PASSWORD")
        self.RQ_QUEUE = _env("QUEUE", "spacemail")
        self.BASE_URL = (_env("BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = self.BASE_URL.startswith("https://")
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE  # create_app keeps the two equal
        # Sessions are rows (webapp/auth/sessions.py): one idle this long is over.
        self.SESSION_IDLE_DAYS = int(_env("SESSION_IDLE_DAYS", "7"))
        self.REMEMBERED_SESSION_DAYS = int(_env("REMEMBERED_SESSION_DAYS", "30"))
        self.REMEMBER_COOKIE_DURATION = timedelta(days=self.REMEMBERED_SESSION_DAYS)
        # Failed sign-ins (and setup, password change) allowed per account and per client address: moving windows.
        self.SIGNIN_ACCOUNT_LIMITS = _env("SIGNIN_ACCOUNT_LIMITS", "5 per minute; 10 per 15 minutes; 30 per day")
        self.SIGNIN_ADDRESS_LIMITS = _env("SIGNIN_ADDRESS_LIMITS", "20 per minute; 100 per hour")
        self.SIGNIN_SLOW_DOWN_SECONDS = float(_env("SIGNIN_SLOW_DOWN_SECONDS", "0.5"))
        # Mailed single-use links: an invitation, "Forgot password?", a reset an admin sends, a new address.
        self.INVITATION_DAYS = int(_env("INVITATION_DAYS", "7"))
        self.PASSWORD_RESET_MINUTES = int(_env("PASSWORD_RESET_MINUTES", "60"))
        self.ADMIN_RESET_HOURS = int(_env("ADMIN_RESET_HOURS", "72"))
        self.EMAIL_CONFIRM_HOURS = int(_env("EMAIL_CONFIRM_HOURS", "24"))
        self.WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
        self.TESTING = False
        # werkzeug's scrypt; tests lower the cost (same code path, fewer rounds).
        self.PASSWORD_HASH_METHOD = "scrypt"
        self.RATELIMIT_HEADERS_ENABLED = True
        self.TEST_CONNECTION_RATE = _env("TEST_CONNECTION_RATE", "10 per minute")
        self.ARCHIVE_PARSE_LIMIT = int(_env("ARCHIVE_PARSE_LIMIT_MB", "25")) * 1024 * 1024
        self.MAIL_TIMEOUT_SECONDS = float(_env("MAIL_TIMEOUT_SECONDS", "60"))
        self.FETCH_BATCH_SIZE = int(_env("FETCH_BATCH_SIZE", "500"))
        self.FETCH_BATCH_BYTES = 32 * 1024 * 1024
        self.FETCH_LEASE_SECONDS = int(_env("FETCH_LEASE_SECONDS", "300"))
        self.FETCH_JOB_TIMEOUT = 6 * 3600
        # Outgoing mail: an optional server from configuration (secrets stay out of the database).
        self.SMTP_URL = _env("SMTP_URL")
        self.SMTP_FROM = _env("SMTP_FROM")
        self.SMTP_FROM_NAME = _env("SMTP_FROM_NAME")
        self.SMTP_SUBJECT_PREFIX = _env("SMTP_SUBJECT_PREFIX")
        self.SMTP_TIMEOUT = float(_env("SMTP_TIMEOUT", "30"))
        self.SMTP_MAX_PER_MINUTE = int(_env("SMTP_MAX_PER_MINUTE", "0"))  # the provider's limits; 0: none
        self.SMTP_MAX_CONNECTIONS = int(_env("SMTP_MAX_CONNECTIONS", "0"))
        ca_file = _env("SMTP_CA_FILE")
        self.SMTP_CA_PEM = Path(ca_file).read_text() if ca_file else None
        self.MAIL_SEND_BATCH = int(_env("MAIL_SEND_BATCH", "100"))
        # Sent marks are committed in groups this size (or each second): at most this many resent after a crash.
        self.MAIL_MARK_EVERY = int(_env("MAIL_MARK_EVERY", "100"))
        # A row left in "sending" this long (its worker died) goes back to the queue.
        self.MAIL_SENDING_TIMEOUT_SECONDS = int(_env("MAIL_SENDING_TIMEOUT_SECONDS", "900"))
        # Sign-in providers (OAuth 2.0): how long a provider may take, how early workers renew an access token,
        # client secrets from the environment (SPACEMAIL_OAUTH_SECRET_<PROVIDER NAME>), and plain http to a
        # loopback provider (the tests' own authorization server; never for a real one).
        self.OAUTH_TIMEOUT_SECONDS = float(_env("OAUTH_TIMEOUT_SECONDS", "15"))
        self.OAUTH_REFRESH_AHEAD_SECONDS = float(_env("OAUTH_REFRESH_AHEAD_SECONDS", "300"))
        self.OAUTH_CLIENT_SECRETS = {k: v for k, v in os.environ.items() if k.startswith("SPACEMAIL_OAUTH_SECRET_")}
        self.OAUTH_ALLOW_HTTP_LOOPBACK = _env("OAUTH_ALLOW_HTTP_LOOPBACK", "") == "1"
        self.MAX_CONTENT_LENGTH = int(_env("MAX_UPLOAD_MB", "1024")) * 1024 * 1024  # mbox imports


# Every PostgreSQL session Spacemail opens asks the server to notice a client that vanished (a host that lost
# power or its network sends no FIN): keepalive probes after 30 s idle, every 10 s, 3 missed = gone (and data
# it never acknowledged given up after 60 s, tcp_user_timeout, where keepalives do not apply), so its
# transaction is rolled back and its row locks freed in about a minute, not after the kernel's 2 hours (seen in
# tests/test_deployment.py: the web waited on a dead worker's lock). A transaction left idle for 15 minutes by a
# live but stuck client is ended too. Both are per-session settings: no server configuration needed.
POSTGRES_SESSION_OPTIONS = ("-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 "
                            "-c tcp_user_timeout=60000 -c idle_in_transaction_session_timeout=900000")


def engine_options(url: str, options: dict) -> dict:
    """The engine options for `url`: PostgreSQL sessions get POSTGRES_SESSION_OPTIONS (after any given)."""
    if not url.startswith("postgresql"):
        return options
    connect_args = dict(options.get("connect_args") or {})
    connect_args["options"] = " ".join(filter(None, [POSTGRES_SESSION_OPTIONS, connect_args.get("options")]))
    return {**options, "connect_args": connect_args}


def sqlite_pragmas(synchronous: str = "FULL"):
    """The listener for each new SQLite connection: WAL and a busy timeout let the web, worker and cron processes
    share one file. FULL, not NORMAL: a commit must survive power loss before mail is deleted on a server (only the
    tests, which pull no power cord, ask for OFF, as they ask PostgreSQL for synchronous_commit=off)."""
    assert synchronous in ("FULL", "OFF")

    def on_connect(dbapi_connection, _record) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    return on_connect
