"""A second real IMAP/POP3 server for the fetch journeys: GNU Mailutils' imap4d and pop3d from Debian (IMAP with
STARTTLS, IMAPS, POP3 with STLS, POP3S), virtual users in a passwd file, Maildirs. Its IMAP server has neither
UIDPLUS nor MOVE, which is the point. pop3d's mandatory locking wants /var/lock/subsys/mail: it is off here
(without it every session was "[IN-USE] Mailbox in use")."""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port, wait_for_port
from tests.mailservers import CA, make_ca

DOMAIN = "mu.test"
PASSWORD = "mu pw"
USERS = 50

CONFIG = """foreground yes;
mode daemon;
logging {{ syslog no; }}
locking {{ type null; }}
mailbox {{ mailbox-type maildir; }}
virtdomain {{ passwd-dir "{root}/passwd.d"; }}
auth {{ authorization virtdomain; authentication generic; }}
tls {{ ssl-certificate-file "{root}/server.crt"; ssl-key-file "{root}/server.key"; }}
tls-file-checks {{ key-file none; cert-file none; ca-file none; }}
server 127.0.0.1:{plain} {{ tls-mode stls; }}
server 127.0.0.1:{tls} {{ tls-mode connection; }}
"""


@dataclass
class Mailutils:
    root: Path
    ports: dict  # imap, imaps, pop3, pop3s
    ca: CA
    procs: list = field(default_factory=list)
    next_user: int = 0

    def add_user(self) -> tuple[str, str]:
        """(login, password) of a fresh mailbox; the login is user@mu.test (a virtual domain)."""
        self.next_user += 1
        name = f"u{self.next_user}"
        for sub in ("cur", "new", "tmp"):
            (self.root / "mail" / name / "INBOX" / sub).mkdir(parents=True, exist_ok=True)
        self._own(self.root / "mail" / name)
        return f"{name}@{DOMAIN}", PASSWORD

    def maildir(self, login: str) -> Path:
        """Mailutils' virtual domains keep a user's INBOX at <home>/INBOX; here it is a Maildir."""
        return self.root / "mail" / login.split("@")[0] / "INBOX"

    def deliver(self, login: str, messages: list[bytes]) -> None:
        """As a delivery agent writes Maildir files: LF line ends (Mailutils reads a CRLF file's headers wrong)."""
        stamp = int(time.time())
        for i, raw in enumerate(messages):
            (self.maildir(login) / "new" / f"{stamp}.M{i}Q{uuid.uuid4().hex[:8]}.mu").write_bytes(
                raw.replace(b"\r\n", b"\n"))
        self._own(self.maildir(login))

    def mailbox_files(self, login: str) -> list[Path]:
        return [p for sub in ("cur", "new") for p in (self.maildir(login) / sub).iterdir()]

    def _own(self, path: Path) -> None:
        if os.getuid() == 0:
            user = pwd.getpwnam("nobody")
            for p in [path, *path.rglob("*")]:
                os.chown(p, user.pw_uid, user.pw_gid)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_mailutils() -> Mailutils:
    for binary in ("imap4d", "pop3d"):
        assert shutil.which(binary), f"{binary} is not installed: run ./scripts/test (mailutils-imap4d, -pop3d)"
    root = Path(tempfile.mkdtemp(prefix="spacemail-mailutils-"))
    os.chmod(root, 0o755)
    ca = make_ca("Spacemail Mailutils Test CA")
    (root / "server.crt").write_text(ca.server_cert_pem)
    (root / "server.key").write_text(ca.server_key_pem)
    os.chmod(root / "server.key", 0o600)
    (root / "passwd.d").mkdir()
    (root / "mail").mkdir()
    if os.getuid() == 0:
        user = pwd.getpwnam("nobody")
        uid, gid = user.pw_uid, user.pw_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True, text=True,
                            check=True).stdout.strip()
    (root / "passwd.d" / DOMAIN).write_text("".join(
        f"u{n}:{hashed}:{uid}:{gid}:User {n}:{root}/mail/u{n}:/bin/false\n" for n in range(1, USERS + 1)))
    ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
    server = Mailutils(root, ports, ca)
    for binary, plain, tls, extra in (("imap4d", "imap", "imaps", ""),
                                      ("pop3d", "pop3", "pop3s", "mandatory-locking { enable no; }\n")):
        config = root / f"{binary}.conf"
        config.write_text(CONFIG.format(root=root, plain=ports[plain], tls=ports[tls]) + extra)
        log = open(root / f"{binary}.log", "wb")
        server.procs.append(subprocess.Popen([shutil.which(binary), f"--config-file={config}", "--no-site-config"],
                                             stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        for port in ports.values():
            wait_for_port(port, timeout=15)
    except RuntimeError:
        logs = " ".join((root / f"{b}.log").read_text()[-1000:] for b in ("imap4d", "pop3d"))
        server.stop()
        raise RuntimeError(f"mailutils did not start: {logs}") from None
    return server
