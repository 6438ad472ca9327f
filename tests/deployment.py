"""Hosts for the deployment test: network namespaces on one bridge, and a PostgreSQL and a Redis of our own.

`Link` makes a Linux bridge in this (the root) namespace with an address of its own, and one namespace per
host, each joined to the bridge by a veth pair: the hosts reach each other and the bridge's address, and
nothing of this machine's loopback (its own PostgreSQL and Redis listen there only). Services that the hosts
share (PostgreSQL, Redis, Dovecot, the SMTP sink) listen on the bridge's address. Everything is removed by pid
and by name at the end, whatever happened.
"""
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port, wait_for_port


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def can_make_namespaces() -> str | None:
    """None when this machine lets us make namespaces and bridges; else why not."""
    if os.getuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    probe = f"smprobe{os.getpid() % 10000}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Link:
    def __init__(self) -> None:
        tag = f"{os.getpid() % 1000:03d}{random.randrange(100):02d}"
        self.tag, self.bridge = tag, f"smbr{tag}"
        self.net = f"10.{200 + random.randrange(50)}.{random.randrange(250)}"
        self.address = f"{self.net}.1"
        self.hosts: dict[str, str] = {}  # name -> namespace
        self.addresses: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> str:
        namespace, veth = f"sm{self.tag}-{name}", f"v{self.tag}{name}"[:15]
        address = f"{self.net}.{10 + len(self.hosts)}"
        _ip("netns", "add", namespace)
        self.hosts[name], self.addresses[name] = namespace, address
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return address

    def run(self, host: str, command: list[str], env: dict, log: Path, cwd: Path | None = None) -> subprocess.Popen:
        """A process on `host` (in its namespace), its output in `log`."""
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *command], env=env, cwd=cwd,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def pids(self, host: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.hosts[host]], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_host(self, host: str) -> None:
        """As if the machine lost power: every process in it killed at once, its link down."""
        for pid in self.pids(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip("link", "set", f"v{self.tag}{host}"[:15], "down")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for host, namespace in self.hosts.items():
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def _postgres_bin() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    if out.returncode == 0 and (Path(out.stdout.strip()) / "postgres").exists():
        return Path(out.stdout.strip())
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "PostgreSQL's server is not installed (Debian's postgresql package)"
    return found[-1].parent


class Postgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder) listening on `address` only, as the
    `postgres` user (it refuses to run as root). Default settings: autovacuum on, fsync on."""

    def __init__(self, address: str, subnet: str) -> None:
        self.bin, self.address, self.port = _postgres_bin(), address, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="spacemail-pg-"))
        self.data = self.dir / "data"
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "-E", "UTF8", "--locale", "C.UTF-8"])
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {subnet}.0/24 trust\n")
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                           "-o", f"-c listen_addresses={address} -c port={self.port} "
                                 f"-c unix_socket_directories={self.dir}", "start"])
        wait_for_port(self.port, host=address)
        self.url = f"postgresql+psycopg://postgres@{address}:{self.port}/spacemail"
        self._as_postgres([str(self.bin / "createdb"), "-h", address, "-p", str(self.port), "-U", "postgres",
                           "spacemail"])

    def _as_postgres(self, command: list[str]) -> None:
        out = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                             cwd=self.dir)
        assert out.returncode == 0, f"{command[0]}: {out.stdout}{out.stderr}"

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A redis-server of our own on `address`, as production wants it off loopback: a password (Redis refuses
    other hosts without one, "protected mode") and persistence (appendonly)."""

    def __init__(self, address: str) -> None:
        self.port, self.dir = free_port(), Path(tempfile.mkdtemp(prefix="spacemail-redis-"))
        password = f"redis-{random.randrange(10 ** 12)}"
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--bind", address, "--port", str(self.port),
                                      "--requirepass", password, "--appendonly", "yes", "--save", "",
                                      "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, host=address)
        self.url = f"redis://:{password}@{address}:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
