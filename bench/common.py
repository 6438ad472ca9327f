"""Shared by the benchmarks: one environment per run, fresh databases, timing, results with their goals."""
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

WORKDIR = Path(os.environ.get("SPACEMAIL_BENCH_DIR") or tempfile.mkdtemp(prefix="spacemail-bench-"))
os.environ["SPACEMAIL_BENCH_DIR"] = str(WORKDIR)
os.environ.setdefault("SPACEMAIL_INSTANCE_DIR", str(WORKDIR / "instance"))
os.environ.setdefault("SPACEMAIL_SECRET_KEY", "benchmark")
os.environ.setdefault("SPACEMAIL_ENCRYPTION_KEYS", "RFhOvKZTL7PkfpItBc3UhkZioOLRYmks5rxyXKtTCZI=")  # throwaway data
PASSWORD = "benchmark password"


@dataclass
class Result:
    """One row of docs/benchmarks.md and bench/results.json."""

    id: str
    work: str
    figure: float
    unit: str
    samples: list[float] = field(default_factory=list)
    reference: str | None = None  # what the figure is compared with
    reference_figure: float | None = None
    reference_samples: list[float] = field(default_factory=list)
    ratio: float | None = None  # figure / reference_figure, oriented so that higher is better for Spacemail
    goal: str = "-"
    met: bool | None = None
    note: str = ""

    @property
    def spread(self) -> str:
        return spread(self.samples)

    def as_json(self) -> dict:
        data = asdict(self)
        data["spread"] = self.spread
        data["reference_spread"] = spread(self.reference_samples)
        return data


def spread(samples: list[float]) -> str:
    return f"{min(samples):,.4g}-{max(samples):,.4g}" if len(samples) > 1 else "-"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(len(ordered) * 0.95)) - 1)]


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def sqlite_url(name: str) -> str:
    path = WORKDIR / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def postgres_url(name: str) -> str | None:
    """A fresh database on the PostgreSQL at SPACEMAIL_BENCH_POSTGRES_URL (default 127.0.0.1:5432), if one answers."""
    from sqlalchemy import create_engine, text

    server = os.environ.get("SPACEMAIL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    engine = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "bench_{name}"'))
    except Exception:
        return None
    finally:
        engine.dispose()
    return server.rsplit("/", 1)[0] + f"/bench_{name}"


def open_app(url: str, **config):
    """An app on the database at `url` as it is (an archive built before)."""
    from webapp import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False,
                       "PASSWORD_HASH_METHOD": "scrypt:1024:8:1", **config})


def make_app(url: str, **config):
    """An app on a new, empty database at `url` with one site space BENCH and its admin `bench`."""
    from webapp.archive import search
    from webapp.auth.services import create_user
    from webapp.extensions import db
    from webapp.settings import SiteSettings
    from webapp.spaces.services import create_site_space

    app = open_app(url, **config)
    with app.app_context():
        db.create_all()
        with db.engine.begin() as conn:
            search.create_tables(conn)
        settings = SiteSettings.get()
        settings.mail_host_allowlist = "127.0.0.1\n::1"
        user = create_user("bench", "bench@example.org", "Bench", PASSWORD, is_admin=True)
        create_site_space(user, "BENCH", "Bench")
        db.session.commit()
    return app


def space_id(app) -> int:
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.spaces.models import Space

    with app.app_context():
        return db.session.scalar(select(Space.id).where(Space.key == "BENCH"))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kb() -> int:
    """This process's resident set now (Linux), in KB."""
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM; getrusage's ru_maxrss can carry a forking parent's peak)."""
    return _status_kb("VmHWM")


def versions() -> dict[str, str]:
    """What ran: the machine and each tool's own version line."""
    import sqlite3

    def first_line(command):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            lines = [line for line in (out.stdout + out.stderr).splitlines() if line and "WARNING" not in line]
            return lines[0].strip() if lines else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "not found"

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, {platform.platform()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "dovecot": first_line(["dovecot", "--version"]),
        "mbsync": first_line(["mbsync", "--version"]),
        "fetchmail": first_line(["fetchmail", "--version"]),
        "notmuch": first_line(["notmuch", "--version"]),
        "postgresql": first_line(["psql", "--version"]),
        "wrk": first_line(["wrk", "--version"]),
    }


class Urls:
    """New databases for runs: urls.sqlite(name), and urls.postgres(name) or None when PostgreSQL is off or absent."""

    def __init__(self, postgres: bool = True) -> None:
        self.use_postgres = postgres

    def sqlite(self, name: str) -> str:
        return sqlite_url(name)

    def postgres(self, name: str) -> str | None:
        return postgres_url(name) if self.use_postgres else None
