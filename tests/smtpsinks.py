"""Real SMTP sinks (aiosmtpd) on loopback: plain, STARTTLS, implicit TLS, with and without AUTH, and faults.

A fault plan makes the next DATA commands answer 4xx or 5xx, drop the connection, or stall. A Tap sits in
front of a sink and keeps every byte the client sent, for checks on what crossed the wire.
"""
import asyncio
import base64
import json
import logging
import socket
import ssl
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.mailservers import CA, make_ca

USERNAME, PASSWORD = "mailer", "s3cret pässword"
logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd logs a deprecation per AUTH, and fault tracebacks


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    tls: bool

    @property
    def message(self):
        """Parsed as a mail client would read it (line endings as LF)."""
        return message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=policy.default)


@dataclass
class Recorder:
    """The handler: keeps what was delivered and every sign-in attempt; follows a fault plan."""

    messages: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # "451 ...", "550 ...", "drop", "stall"
    rcpt_plan: list[str] = field(default_factory=list)  # answers to the next RCPT TO commands
    refusals: dict[str, str] = field(default_factory=dict)  # address -> the answer to every RCPT TO it
    data_commands: int = 0
    stall_seconds: float = 6.0
    pipelining: bool = False  # offer PIPELINING (RFC 2920), as Postfix, Exim and the big providers do

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:] if self.pipelining else responses

    def reset(self) -> None:
        self.messages.clear()
        self.auth_attempts.clear()
        self.plan.clear()
        self.rcpt_plan.clear()
        self.refusals.clear()
        self.data_commands = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_plan:
            return self.rcpt_plan.pop(0)
        if address.lower() in self.refusals:
            return self.refusals[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_commands += 1
        step = self.plan.pop(0) if self.plan else None
        if step == "drop":
            server.transport.abort()
            return "421 4.3.0 dropped"
        if step == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "451 4.3.0 too late"
        if step:
            return step
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      getattr(session, "spacemail_login", None),
                                      session.ssl is not None))
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            self.auth_attempts.append((login, password))
            if (login, password) == (USERNAME, PASSWORD):
                session.spacemail_login = login
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class OAuthRecorder(Recorder):
    """A sink that signs in XOAUTH2 and OAUTHBEARER only, asking the authorization server (RFC 7662) whether the
    bearer token is live and whose it is, as Microsoft's and Google's SMTP servers check theirs."""

    def __init__(self, introspection_url: str) -> None:
        super().__init__()
        self.introspection_url = introspection_url
        self.token_logins: list[tuple[str, str, bool]] = []  # (mechanism, user, accepted)

    def reset(self) -> None:
        super().reset()
        self.token_logins.clear()

    def _check(self, server, session, mechanism: str, user: str, token: str) -> AuthResult:
        body = urllib.parse.urlencode({"token": token}).encode()
        with urllib.request.urlopen(self.introspection_url, body, timeout=5) as answer:
            info = json.loads(answer.read())
        accepted = bool(info.get("active")) and info.get("username") == user
        self.token_logins.append((mechanism, user, accepted))
        if accepted:
            session.spacemail_login = user
            return AuthResult(success=True, handled=False)
        return AuthResult(success=False, handled=False)

    async def _initial(self, server, args):
        if len(args) > 1:
            return base64.b64decode(args[1])
        return await server.challenge_auth("")

    async def _refuse(self, server):
        # RFC 7628 §3.2.2: an error challenge (JSON), the client's dummy answer, then the failure.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))

    async def auth_XOAUTH2(self, server, args):
        message = (await self._initial(server, args)).decode()
        fields = dict(part.split("=", 1) for part in message.split("\x01") if "=" in part)
        result = self._check(server, server.session, "XOAUTH2", fields.get("user", ""),
                             fields.get("auth", "").removeprefix("Bearer "))
        if not result.success:
            await self._refuse(server)
        return result

    async def auth_OAUTHBEARER(self, server, args):
        message = (await self._initial(server, args)).decode()
        header, _, rest = message.partition("\x01")
        user = next((p[2:] for p in header.split(",") if p.startswith("a=")), "").replace("=2C", ",").replace("=3D", "=")
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        result = self._check(server, server.session, "OAUTHBEARER", user, fields.get("auth", "").removeprefix("Bearer "))
        if not result.success:
            await self._refuse(server)
        return result


class Sink:
    """One aiosmtpd server in a thread; stop() and start() keep its port."""

    def __init__(self, ca: CA, *, security: str = "none", auth: bool = False, recorder: Recorder | None = None,
                 host: str = "127.0.0.1") -> None:
        self.ca, self.security, self.auth, self.host = ca, security, auth, host
        self.recorder = recorder or Recorder()
        self.port = _free_port()
        self.controller = None
        self.start()

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as cert, tempfile.NamedTemporaryFile("w") as key:
            cert.write(self.ca.server_cert_pem)
            key.write(self.ca.server_key_pem)
            cert.flush()
            key.flush()
            context.load_cert_chain(cert.name, key.name)
        return context

    def start(self) -> None:
        kwargs = {}
        if self.security == "starttls":
            kwargs.update(tls_context=self._server_context(), require_starttls=True)
        if self.auth:
            # AUTH offered (over TLS after STARTTLS; at once on plain and implicit-TLS ports, where aiosmtpd
            # cannot tell it is already encrypted); the tests check each message's login themselves.
            kwargs.update(authenticator=self.recorder.authenticate, auth_require_tls=self.security == "starttls")
        self.controller = Controller(self.recorder, hostname=self.host, port=self.port,
                                     ssl_context=self._server_context() if self.security == "tls" else None,
                                     server_hostname="localhost", ready_timeout=10, **kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages


class Tap:
    """A loopback relay in front of `port` that keeps every byte the client sent."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client_bytes = bytearray()
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    self.client_bytes.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()


class Sinks:
    """Every kind of sink the tests need, sharing one test CA (not in the system trust store)."""

    def __init__(self) -> None:
        self.ca = make_ca("Spacemail SMTP Test CA")
        self.plain = Sink(self.ca)
        self.plain_auth = Sink(self.ca, auth=True)
        self.starttls = Sink(self.ca, security="starttls")
        self.starttls_auth = Sink(self.ca, security="starttls", auth=True)
        self.tls = Sink(self.ca, security="tls")
        self.tls_auth = Sink(self.ca, security="tls", auth=True)

    @property
    def all(self) -> list[Sink]:
        return [self.plain, self.plain_auth, self.starttls, self.starttls_auth, self.tls, self.tls_auth]

    def reset(self) -> None:
        for sink in self.all:
            if sink.controller is None:
                sink.start()
            sink.recorder.reset()

    def stop(self) -> None:
        for sink in self.all:
            sink.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
