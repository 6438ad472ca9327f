"""A real Postfix (Debian's) on a free loopback port, with its own configuration, queue and log, for the tests.

Postfix's master runs as root and its daemons as the postfix user, so this needs root (CI runs as root, and
./scripts/test installs the package). Each instance lives in a directory of its own under /tmp that the postfix
user can enter (pytest's own temporary directories are private to root).
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port, wait_for_port

POSTFIX = "/usr/sbin/postfix"
MASTER_CF = """\
{port}      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One Postfix instance: `main` holds its own main.cf lines (restrictions, relayhost, maps)."""

    def __init__(self, main: list[str], files: dict[str, str] | None = None) -> None:
        assert os.path.exists(POSTFIX), "postfix is not installed: run ./scripts/test, which installs it"
        assert os.geteuid() == 0, "Postfix's master must start as root (CI runs the tests as root)"
        self.root = Path(tempfile.mkdtemp(prefix="spacemail-postfix-"))
        self.root.chmod(0o755)
        self.port = free_port()
        etc, queue, data = self.root / "etc", self.root / "queue", self.root / "data"
        for folder in (etc, queue, data):
            folder.mkdir()
        shutil.chown(data, "postfix")
        for name, text in (files or {}).items():
            (etc / name).write_text(text)
        self.log = self.root / "maillog"
        lines = [
            "compatibility_level = 3.6", f"queue_directory = {queue}", f"data_directory = {data}",
            "mail_owner = postfix", "setgid_group = postdrop", "inet_interfaces = 127.0.0.1", "inet_protocols = ipv4",
            "myhostname = mta.spacemail.test", "mydestination =", "mynetworks = 127.0.0.0/8", "alias_maps =",
            "alias_database =", "local_recipient_maps =", "smtp_tls_security_level = none",
            "smtp_dns_support_level = disabled", f"maillog_file = {self.log}", "maillog_file_prefixes = /tmp",
            "shlib_directory = /usr/lib/postfix", "daemon_directory = /usr/lib/postfix/sbin",
            "meta_directory = /etc/postfix", "smtpd_relay_restrictions = permit_mynetworks, reject",
            *[line.replace("{etc}", str(etc)) for line in main],
        ]
        (etc / "main.cf").write_text("\n".join(lines) + "\n")
        (etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        self.etc = etc
        started = subprocess.run([POSTFIX, "-c", str(etc), "start"], capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, f"postfix did not start: {started.stderr}\n{self.log_text()}"
        wait_for_port(self.port, 20)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_count(self, text: str, at_least: int = 0, timeout: float = 5) -> int:
        """How often `text` is in the log, waiting up to `timeout` for `at_least` (postlogd writes a moment later)."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.log_text().count(text)
            if count >= at_least or time.monotonic() > deadline:
                return count
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "abort"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
