"""What a production install needs, checked: `flask doctor` and Administration › System health.

Each check says what it found and, when something is wrong, what to do. A check is "ok", "warn" (works, but
not as production should) or "fail" (something people rely on does not work). Workers note their host's key
fingerprints in Redis as they run jobs (report_host), so the web can tell whether every host has the same keys.
"""
import hashlib
import json
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from sqlalchemy import text

from webapp.extensions import db

OK, WARN, FAIL = "ok", "warn", "fail"
HOSTS_KEY = "spacemail:hosts"
HOST_REPORT_EVERY = 60  # seconds between one process's reports
HOST_FORGOTTEN_AFTER = 24 * 3600  # a host not heard from for a day is no longer compared
SQLITE_FREE_BYTES = 1024 ** 3  # free disk below this beside a SQLite database is a warning
_last_report = 0.0


@dataclass
class Check:
    name: str
    status: str
    found: str
    fix: str = ""


def fingerprint(value: str) -> str:
    """A short, one-way mark of a secret, to compare between hosts without showing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def fingerprints(config=None) -> dict[str, str]:
    config = config or current_app.config
    return {"secret_key": fingerprint(config["SECRET_KEY"]),
            "encryption_keys": fingerprint(",".join(config["ENCRYPTION_KEYS"]))}


def report_host(role: str) -> None:
    """Note in Redis this host's key fingerprints (at most once a minute a process); never raises."""
    global _last_report
    now = time.time()
    if now - _last_report < HOST_REPORT_EVERY:
        return
    _last_report = now
    try:
        from webapp.jobs import redis_connection

        redis_connection().hset(HOSTS_KEY, f"{socket.gethostname()} ({role})",
                                json.dumps({**fingerprints(), "seen": now}))
    except Exception:  # noqa: BLE001 - a health note must never stop a job
        pass


def run_checks() -> list[Check]:
    """Every check, in the order a person setting up production would go through them. A check that cannot be
    made (its service is down) says so instead of raising."""
    checks = [_guarded("Keys", _keys), _guarded("Base URL", _base_url)]
    database = _guarded("Database", _database)
    checks += database
    checks += _guarded("Redis", _redis)
    if not any(c.name == "Database" and c.status == FAIL for c in database):
        checks.append(_guarded("Outgoing mail", _mail_servers))
    return checks


def _guarded(name: str, check):
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a health page must show, whatever is broken
        found = Check(name, FAIL, f"could not be checked ({type(exc).__name__}: {str(exc)[:200]})",
                      "See the web server's log.")
        return [found] if name in ("Database", "Redis") else found


def _keys() -> Check:
    config = current_app.config
    marks = fingerprints()
    found = f"secret key {marks['secret_key']}, encryption keys {marks['encryption_keys']} (fingerprints)"
    sources = config.get("KEY_SOURCES", {})
    from_files = [name for name, source in sources.items() if source == "instance"]
    others = _other_hosts(marks)
    if others:
        return Check("Keys", FAIL, found + "; different on " + ", ".join(others),
                     "Give every host the same SPACEMAIL_SECRET_KEY and SPACEMAIL_ENCRYPTION_KEYS: a worker with "
                     "other keys cannot read the stored mail passwords, and sessions break between web hosts.")
    if from_files:
        return Check("Keys", WARN, found + f"; generated on this host ({', '.join(from_files)} in the instance "
                     "folder)", "Fine for one machine. For production set SPACEMAIL_SECRET_KEY and "
                     "SPACEMAIL_ENCRYPTION_KEYS (the same on every host) and back them up with the database.")
    return Check("Keys", OK, found + "; set, not generated" + (", the same on every host that reported"
                                                             if _hosts() else ""))


def _hosts() -> dict[str, dict]:
    try:
        from webapp.jobs import redis_connection

        raw = redis_connection().hgetall(HOSTS_KEY)
    except Exception:  # noqa: BLE001 - Redis has its own check
        return {}
    hosts = {}
    for name, value in raw.items():
        try:
            data = json.loads(value)
        except ValueError:
            continue
        if time.time() - data.get("seen", 0) < HOST_FORGOTTEN_AFTER:
            hosts[name.decode() if isinstance(name, bytes) else name] = data
    return hosts


def _other_hosts(marks: dict) -> list[str]:
    return sorted(name for name, data in _hosts().items()
                  if (data.get("secret_key"), data.get("encryption_keys")) != (marks["secret_key"],
                                                                              marks["encryption_keys"]))


def _base_url() -> Check:
    base = current_app.config["BASE_URL"]
    if base.startswith("https://"):
        return Check("Base URL", OK, base)
    return Check("Base URL", WARN, base + " (not https)",
                 "Serve Spacemail over HTTPS behind a proxy and set SPACEMAIL_BASE_URL=https://…: links in mail, "
                 "secure cookies and sign-in providers' redirects use it.")


def _database() -> list[Check]:
    engine = db.engine
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        return [Check("Database", FAIL, f"{where}: no answer ({type(exc).__name__})",
                      "Start the database, or fix SPACEMAIL_DATABASE_URL; then run `flask db upgrade`.")]
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - no alembic_version table: never migrated
        current = None
    head = _migration_head()
    checks = []
    if current != head:
        checks.append(Check("Database schema", FAIL,
                            f"at revision {current}, this code needs {head}" if current else "never migrated",
                            "Run `flask db upgrade` (before starting the new code's processes)."))
    else:
        checks.append(Check("Database schema", OK, f"migrated (revision {current})"))
    if engine.dialect.name == "sqlite":
        checks.append(Check("Database", WARN, "SQLite (one machine only)",
                            "Fine for a small team on one machine. For several hosts, or many workers, use "
                            "PostgreSQL (README › Production)."))
        checks.append(_sqlite_disk(engine))
    else:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
            autovacuum = conn.execute(text("SHOW autovacuum")).scalar()
        checks.append(Check("Database", OK, f"PostgreSQL {version}"))
        if autovacuum != "on":
            checks.append(Check("PostgreSQL autovacuum", WARN, "off",
                                "Turn autovacuum on (postgresql.conf): without it the planner's statistics go stale "
                                "and searches and fetches slow down as the archive grows."))
    return checks


def _migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    directory = Path(current_app.root_path).parent / "migrations"
    config = Config()
    config.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(config).get_current_head()


def _sqlite_disk(engine) -> Check:
    path = Path(engine.url.database or ".").resolve().parent
    free = shutil.disk_usage(path).free
    found = f"{free / 1024 ** 3:.1f} GB free beside {path}"
    if free < SQLITE_FREE_BYTES:
        return Check("Disk space", FAIL if free < SQLITE_FREE_BYTES // 10 else WARN, found,
                     "Free disk space: the archive stops growing (and fetches stop) when the disk is full.")
    return Check("Disk space", OK, found)


def _redis() -> list[Check]:
    from rq import Worker
    from rq.cron import CronScheduler

    from webapp.jobs import redis_connection

    connection = redis_connection()
    try:
        connection.ping()
    except Exception as exc:  # noqa: BLE001
        return [Check("Redis", FAIL, f"no answer ({type(exc).__name__})",
                      "Start Redis, or fix SPACEMAIL_REDIS_URL: without it no mail is fetched or sent.")]
    checks = []
    try:
        appendonly = connection.config_get("appendonly").get("appendonly")
    except Exception:  # noqa: BLE001 - hosted Redis may refuse CONFIG
        appendonly = None
    if appendonly == "yes":
        checks.append(Check("Redis persistence", OK, "appendonly yes"))
    else:
        checks.append(Check("Redis persistence", WARN, f"appendonly {appendonly or 'unknown'}",
                            "Set `appendonly yes` in redis.conf: mail to send and archives are database rows and "
                            "survive a Redis restart, but queued jobs and retry times are lost with it."))
    workers = Worker.all(connection=connection)
    if workers:
        hosts = ", ".join(sorted({w.hostname or "?" for w in workers}))
        checks.append(Check("Workers", OK, f"{len(workers)} alive ({hosts})"))
    else:
        checks.append(Check("Workers", FAIL, "none alive",
                            "Start at least one `rq worker --with-scheduler` (README › Production): nothing is "
                            "fetched or sent without one."))
    schedulers = CronScheduler.all(connection)
    if len(schedulers) == 1:
        checks.append(Check("Scheduler", OK, f"one ({schedulers[0].hostname or schedulers[0].name})"))
    elif not schedulers:
        checks.append(Check("Scheduler", FAIL, "none running",
                            "Start exactly one `rq cron workers.cron`: it fetches every 30 minutes, sends the daily "
                            "report and renews sign-ins."))
    else:
        checks.append(Check("Scheduler", FAIL, f"{len(schedulers)} running",
                            "Run exactly one `rq cron workers.cron` for the whole site: each one starts every "
                            "scheduled job again (two daily reports, twice the fetches)."))
    return checks


def _mail_servers() -> Check:
    from webapp.outgoing.models import SmtpServer

    count = db.session.query(SmtpServer).count()
    if count or current_app.config.get("SMTP_URL"):
        return Check("Outgoing mail", OK, f"{count} SMTP server(s)" + (" and SPACEMAIL_SMTP_URL"
                                                                      if current_app.config.get("SMTP_URL") else ""))
    return Check("Outgoing mail", WARN, "no SMTP server",
                 "Add one in Administration › Mail servers: until then notifications and reports wait in the "
                 "mail queue.")


def summary(checks: list[Check]) -> str:
    return ", ".join(f"{sum(c.status == s for c in checks)} {s}" for s in (OK, WARN, FAIL))

