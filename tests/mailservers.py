"""Real mail servers for tests: a throwaway CA, and Dovecot (IMAP, IMAPS, POP3, POP3S) run rootless."""
import datetime
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port, wait_for_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USERS = 400
PASSWORD = "secret pw"


@dataclass
class CA:
    """A certificate authority of our own and a server certificate for localhost/127.0.0.1 it signed."""

    name: str
    cert_pem: str
    server_cert_pem: str
    server_key_pem: str


def make_ca(name: str = "Spacemail Test CA", ips: tuple[str, ...] = ("127.0.0.1",)) -> CA:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return CA(name, pem(ca_cert), pem(cert), key_pem)


@dataclass
class Dovecot:
    root: Path
    ports: dict
    ca: CA
    proc: subprocess.Popen | None = None
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)

    def add_user(self) -> tuple[str, str]:
        """A mailbox user nobody used yet, with an empty Maildir: (username, password).

        Users are written before Dovecot starts: it re-reads passwd-file at most once a second."""
        self.next_user = getattr(self, "next_user", 0) + 1
        assert self.next_user <= USERS, "raise USERS in tests/mailservers.py"
        username = f"user{self.next_user}"
        home = self.root / "home" / username
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        self._own(home)
        return username, PASSWORD

    def maildir(self, username: str) -> Path:
        return self.root / "home" / username / "Maildir"

    def deliver(self, username: str, messages: list[bytes], folder: str | None = None) -> None:
        """Put messages into the user's Maildir as a delivery agent would."""
        target = self.maildir(username) if folder is None else self.maildir(username) / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(parents=True, exist_ok=True)
        stamp = int(time.time())
        for i, raw in enumerate(messages):
            name = f"{stamp}.M{i}P{os.getpid()}Q{uuid.uuid4().hex[:8]}.test,S={len(raw)}"
            (target / "new" / name).write_bytes(raw)
        self._own(self.maildir(username))

    def mailbox_files(self, username: str) -> list[Path]:
        box = self.maildir(username)
        return [p for sub in ("cur", "new") for p in (box / sub).iterdir()]

    def _own(self, path: Path) -> None:
        if os.getuid() == 0:
            for p in [path, *path.rglob("*")]:
                try:
                    os.chown(p, self.uid, self.gid)
                except FileNotFoundError:  # Dovecot moved it from new/ to cur/ meanwhile (a client opened the box)
                    pass

    def end_sessions(self, username: str) -> int:
        """Kill this Dovecot's IMAP and POP3 processes serving `username`, as a server ending a session does
        (Microsoft ends one when its access token runs out). Needs verbose_proctitle (set in CONFIG)."""
        listing = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
        killed = 0
        for line in listing.splitlines():
            pid, ppid, args = line.split(None, 2)
            if int(ppid) == self.proc.pid and args.startswith(("dovecot/imap [", "dovecot/pop3 [")) \
                    and args.split("[", 1)[1].split()[0] == username:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        return killed

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)  # its mailboxes, logs and keys (a run left one behind each)


CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
verbose_proctitle = yes
protocols = imap pop3
listen = {listen}
ssl = {ssl}
{ssl_files}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth_mechanisms}
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 0
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
{oauth_passdb}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/passwd
}}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
pop3_lock_session = yes
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = {imaps_ssl}
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = {imaps_ssl}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


OAUTH_PASSDB = """passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {root}/oauth2.conf
}}"""

# Dovecot asks the authorization server whether a bearer token is live and whose it is (RFC 7662): the
# username it names ("user3@mail.test") must be the one the client signs in as; its mailbox is user3's.
OAUTH_CONF = """introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
"""


def start_dovecot(ssl: bool = True, ca: CA | None = None, introspection_url: str | None = None,
                  oauth_mechanisms: str = "xoauth2 oauthbearer", imap_capability: str | None = None,
                  listen: str = "127.0.0.1") -> Dovecot:
    """Dovecot on four free loopback ports with its own config; as root it runs as nobody (setpriv). With an
    introspection URL it also signs in XOAUTH2 and OAUTHBEARER, asking that authorization server."""
    assert os.path.exists(DOVECOT), "dovecot is not installed: run ./scripts/test, which installs it"
    root = Path(tempfile.mkdtemp(prefix="spacemail-dovecot-"))
    os.chmod(root, 0o755)
    ca = ca or make_ca()
    (root / "server.crt").write_text(ca.server_cert_pem)
    (root / "server.key").write_text(ca.server_key_pem)
    (root / "passwd").write_text("".join(
        f"user{n}:{{PLAIN}}{PASSWORD}:{{uid}}:{{gid}}::{root}/home/user{n}::\n" for n in range(1, USERS + 1)))
    for sub in ("run", "state", "home"):
        (root / sub).mkdir()
    if os.getuid() == 0:
        user = pwd.getpwnam("nobody")
        uid, gid, username, group = user.pw_uid, user.pw_gid, "nobody", "nogroup"
    else:
        uid, gid = os.getuid(), os.getgid()
        username = pwd.getpwuid(uid).pw_name
        import grp

        group = grp.getgrgid(gid).gr_name
    (root / "passwd").write_text((root / "passwd").read_text().replace("{uid}", str(uid)).replace("{gid}", str(gid)))
    ports = {name: free_port() for name in ("imap", "imaps", "pop3", "pop3s")}
    ssl_files = f"ssl_cert = <{root}/server.crt\nssl_key = <{root}/server.key" if ssl else ""
    if introspection_url:
        (root / "oauth2.conf").write_text(OAUTH_CONF.format(url=introspection_url))
    (root / "dovecot.conf").write_text(CONFIG.format(
        root=root, ssl="yes" if ssl else "no", ssl_files=ssl_files, user=username, group=group, listen=listen,
        imaps_ssl="yes" if ssl else "no", oauth_mechanisms=f" {oauth_mechanisms}" if introspection_url else "",
        oauth_passdb=OAUTH_PASSDB.format(root=root, mechanisms=oauth_mechanisms) if introspection_url else "",
        **ports) + (f"imap_capability = {imap_capability}\n" if imap_capability else ""))
    server = Dovecot(root=root, ports=ports, ca=ca, uid=uid, gid=gid)
    for p in [root, *root.rglob("*")]:
        if os.getuid() == 0:
            os.chown(p, uid, gid)
    command = [DOVECOT, "-F", "-c", str(root / "dovecot.conf")]
    if os.getuid() == 0:
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"] + command
    with open(root / "stderr.log", "wb") as stderr:
        server.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        for port in ports.values():
            wait_for_port(port, timeout=15, host=listen)
    except RuntimeError:
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        stderr = (root / "stderr.log").read_text()
        server.stop()
        raise RuntimeError(f"dovecot did not start: {stderr[-2000:]} {log[-2000:]}") from None
    return server
