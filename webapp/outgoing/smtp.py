"""Talking to an SMTP server: verified TLS, STARTTLS that is never skipped, and one clear error per cause."""
import base64
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from webapp.mailnet import (
    OAUTH, PASSWORD, MailboxError, describe_untrusted, oauth_abort, oauth_mechanism, oauth_response, peek_certificate,
    tls_context,
)
from webapp.oauth.tokens import access_token
from webapp.outgoing.models import STARTTLS, TLS

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_ENHANCED = re.compile(r"\b[245]\.(\d{1,3})\.(\d{1,3})\b")
# Words of a refusal that concerns this client or the whole session, not one mailbox.
_SESSION_WORDS = re.compile(r"too many (connections|sessions|messages|mails|recipients|errors)|rate.?limit|throttl|"
                            r"try again later|client host|connection rate|too fast|slow down|"
                            r"temporarily (deferred|blocked|rejected)|service (not )?(temporarily )?unavailable|"
                            r"resources? (temporarily )?unavailable|insufficient system", re.IGNORECASE)
_MAILBOX_WORDS = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|user unknown|no such user|mailbox "
                            r"(unavailable|disabled|busy)", re.IGNORECASE)
SESSION, MAIL = "session", "mail"


@dataclass(frozen=True)
class SmtpProfile:
    """Everything needed to send through one server, from the database or from SPACEMAIL_SMTP_URL."""

    key: str
    name: str
    host: str
    port: int
    security: str
    from_address: str
    from_name: str = "${fullname} (Spacemail)"
    subject_prefix: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    reply_to_policy: str = "none"
    trusted_ca_pem: str | None = None
    from_configuration: bool = False
    auth: str = PASSWORD  # or oauth: sign in with the grant's access token (XOAUTH2 or OAUTHBEARER)
    oauth_grant_id: int | None = None
    max_per_minute: int = 0  # 0: no limit
    max_connections: int = 0

    def __repr__(self) -> str:  # never the password, in logs or tracebacks
        return f"SmtpProfile({self.key}: {self.security}://{self.username or ''}@{self.host}:{self.port})"


class SmtpError(MailboxError):
    """One cause of failure: `kind`, a message and a hint an admin can act on, and whether to retry."""

    def __init__(self, kind: str, message: str, hint: str = "", *, transient: bool = True,
                 broken: bool = True, code: int | None = None, scope: str = MAIL) -> None:
        super().__init__(kind, message, hint)
        self.transient, self.broken, self.code, self.scope = transient, broken, code, scope

    @property
    def concerns_session(self) -> bool:
        """A temporary refusal of this client or session: every mail on this server would meet it now."""
        return self.transient and self.scope == SESSION

    def __str__(self) -> str:
        return self.message


def refusal_scope(stage: str, code: int, message: str, first: bool) -> str:
    """SESSION when a temporary refusal concerns the client or the session (421; 4.3.x, 4.7.x, 4.4.5, 4.5.3;
    "too many connections"; any at MAIL FROM; greylisting of the first recipient), MAIL when it concerns one
    recipient (4.2.2 mailbox full) or is permanent."""
    if not 400 <= code < 500:
        return MAIL
    if code == 421 or stage in ("greeting", "mail"):
        return SESSION
    enhanced = _ENHANCED.search(message)
    subject, detail = (int(enhanced.group(1)), int(enhanced.group(2))) if enhanced else (None, None)
    if re.search(r"gr[ea]ylist", message, re.IGNORECASE):
        return SESSION if first else MAIL  # the first recipient greylisted: the rest would be too
    if subject in (1, 2) or _MAILBOX_WORDS.search(message):
        return MAIL
    if subject in (3, 7) or (subject, detail) in ((4, 5), (5, 3)):
        return SESSION
    return SESSION if _SESSION_WORDS.search(message) else MAIL


def crlf(data: bytes) -> bytes:
    """Every line ending as CRLF: a bare CR or LF on the wire is how SMTP smuggling starts. (What the regular
    expression \r\n|\r|\n -> \r\n does, by three replaces at a tenth of its cost; by one where there is no CR.)"""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _data_lines(data: bytes) -> bytes:
    """The message as sent after DATA: CRLF line endings, leading dots doubled, ended by a lone dot (one pass each,
    where smtplib's data() makes three)."""
    body = crlf(data).replace(b"\n.", b"\n..")  # every line that starts with a dot, the first one too
    body = b"." + body if body.startswith(b".") else body
    return body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n")


def _envelope(sender: str, recipient: str, options: list[str]) -> bytes:
    words = "".join(" " + option for option in options)
    return f"MAIL FROM:{_angle(sender)}{words}\r\nRCPT TO:{_angle(recipient)}\r\nDATA\r\n".encode("utf-8")


def _angle(address: str) -> str:
    """<address> for MAIL FROM and RCPT TO. A plain dot-atom address is written as it is (smtplib's quoteaddr parses
    every address again, a tenth of a sender's time); anything else goes through quoteaddr as before."""
    return f"<{address}>" if PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


class _Recording:
    """Keeps the conversation for Send Test Email, with credentials and message bodies left out."""

    transcript: list[str] | None = None
    _in_auth = False
    _body_next = False

    def send(self, s):
        if self.transcript is not None and len(self.transcript) < 200:
            text = s.decode("ascii", "replace") if isinstance(s, bytes) else s
            if self._body_next:
                self._body_next = False
                self.transcript.append(f"C: <the message, {len(s):,} bytes>")
            elif text[:5].upper() == "AUTH ":
                self._in_auth = True
                self.transcript.append("C: " + " ".join(text.split()[:2]) + (" ****" if len(text.split()) > 2 else ""))
            elif self._in_auth:
                self.transcript.append("C: ****")
            else:
                self.transcript.append("C: " + text.rstrip("\r\n"))
                self._body_next = text[:4].upper() == "DATA"
        super().send(s)

    def getreply(self):
        code, message = super().getreply()
        if self.transcript is not None:
            self._in_auth = self._in_auth and code == 334
            self._body_next = self._body_next and code == 354
            lines = message.decode("utf-8", "replace").splitlines() or [""]
            self.transcript.extend(f"S: {code} {line}" for line in lines[:20])
        return code, message


class _SMTP(_Recording, smtplib.SMTP):
    pass


class _SMTPS(_Recording, smtplib.SMTP_SSL):
    pass


class SmtpSession:
    """One connection: open() greets, secures and signs in; send() delivers one mail; close() quits."""

    def __init__(self, profile: SmtpProfile, *, record: bool = False, local_hostname: str | None = None) -> None:
        self.profile = profile
        self.transcript: list[str] | None = [] if record else None
        self.local_hostname = local_hostname or "spacemail.localdomain"
        self.conn = None
        self.delivered = 0  # mails this session delivered: a refusal of the first recipient may be greylisting
        self.announced: tuple[str, str] | None = None  # the next mail's envelope, written behind the last message

    def open(self) -> "SmtpSession":
        p = self.profile
        context = tls_context(p.trusted_ca_pem, SmtpError) if p.security in (STARTTLS, TLS) else None
        try:
            if p.security == TLS:
                conn = _SMTPS(local_hostname=self.local_hostname, timeout=p.timeout, context=context)
            else:
                conn = _SMTP(local_hostname=self.local_hostname, timeout=p.timeout)
            conn.transcript = self.transcript
            conn._host = p.host  # smtplib takes the TLS server name from here (set only by its constructor)
            self.conn = conn
            self._greet(conn)
            conn.ehlo_or_helo_if_needed()
            if p.security == STARTTLS:
                if not conn.has_extn("starttls"):
                    raise starttls_missing(p)
                conn.starttls(context=context)
                conn.ehlo()
            if p.username:
                self._login(conn)
        except SmtpError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise self._untrusted(exc) from None
        except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
            self.close()
            raise classify(exc, p) from None
        return self

    def _greet(self, conn) -> None:
        p = self.profile
        try:
            code, message = conn.connect(p.host, p.port)
        except ssl.SSLCertVerificationError:
            raise
        except ssl.SSLError:
            if _speaks_plain_smtp(p):
                raise wrong_port_plain(p) from None
            raise
        except (smtplib.SMTPServerDisconnected, TimeoutError, socket.timeout):
            if p.security != TLS and _speaks_tls(p):
                raise wrong_port_tls(p) from None
            raise
        if code != 220:
            raise SmtpError("greeting_refused", f"The server refused the connection: {code} {_text(message)}",
                            "The server may be busy or may not accept mail from this host.", code=code,
                            transient=not 500 <= code < 600, scope=refusal_scope("greeting", code, "", True))

    def _login(self, conn) -> None:
        p = self.profile
        if p.auth == OAUTH:
            return self._login_with_token(conn)
        if not conn.has_extn("auth"):
            offered = "over this unencrypted connection" if p.security not in (STARTTLS, TLS) else ""
            raise SmtpError("auth_not_offered", f"The server offers no authentication (AUTH) {offered}".strip() + ".",
                            "Clear the username and password if this server relays by address, or choose STARTTLS "
                            "or SSL/TLS: many servers offer AUTH only over TLS.")
        offered = conn.esmtp_features.get("auth", "").upper().split()
        usable = [m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in offered]
        if not usable:
            raise SmtpError("auth_mechanisms", f"The server offers {', '.join(offered) or 'no'} authentication, none "
                            "of which Spacemail supports.", "Spacemail signs in with PLAIN, LOGIN or CRAM-MD5.")
        code, message = _authenticate(conn, usable, p.username, p.password or "")
        if code != 235:
            raise SmtpError("login_refused", f"The server refused the username or password: {code} {_text(message)}",
                            "Check the username and password.", code=code)

    def _login_with_token(self, conn) -> None:
        """AUTH XOAUTH2 or OAUTHBEARER with a current access token; never over an unencrypted connection."""
        p = self.profile
        if p.security not in (STARTTLS, TLS):
            raise SmtpError("oauth_needs_tls", "Signing in with a provider needs STARTTLS or SSL/TLS: a token never "
                            "goes in plain text.", "Choose STARTTLS (port 587) or SSL/TLS (port 465).",
                            transient=False)
        mechanism = oauth_mechanism(conn.esmtp_features.get("auth", "").split())
        if mechanism is None:
            raise SmtpError("oauth_not_offered", "The server offers no sign-in with a token (XOAUTH2 or OAUTHBEARER).",
                            "For Microsoft 365 use smtp.office365.com on port 587; for Google smtp.gmail.com.")
        try:
            token = access_token(p.oauth_grant_id)
        except MailboxError as exc:  # reconnect needed, or the provider did not answer: the mail waits
            raise SmtpError(exc.kind, exc.message, "", transient=True) from None
        message = oauth_response(mechanism, p.username or "", token, p.host, p.port).decode()
        answers = iter([message])
        try:
            conn.auth(mechanism, lambda challenge=None: next(answers, oauth_abort(mechanism).decode()))
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpError("token_refused", f"The server refused the access token: {exc.smtp_code} "
                            f"{_text(exc.smtp_error)}", "Check that the username is the mailbox that signed in, and "
                            "(Microsoft 365) that authenticated SMTP is enabled for that mailbox.",
                            code=exc.smtp_code) from None

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> SmtpError:
        p = self.profile
        peek = lambda: peek_certificate(p.host, p.port, p.host, min(p.timeout, 10),  # noqa: E731
                                        None if p.security == TLS else _starttls_preamble)
        return SmtpError("certificate_untrusted", describe_untrusted(exc, peek),
                         "If this server uses its own CA, add that CA certificate (PEM) to the server's settings.")

    @property
    def pipelines(self) -> bool:
        return self.conn is not None and self.transcript is None and self.conn.has_extn("pipelining")

    def send(self, sender: str, recipient: str, data: bytes, then: tuple[str, str] | None = None,
             meanwhile=None) -> str:
        """Deliver one mail; the server's final reply, or an SmtpError saying whether to retry and whether the
        refusal concerns the whole session. Pipelined (RFC 2920) where the server offers it and no one records
        the conversation: MAIL, RCPT and DATA go in one write, so a mail costs two round trips, not four.

        `then`, the (sender, recipient) of the mail the caller sends next through this session, lets a pipelining
        session write that mail's MAIL, RCPT and DATA right behind this message (RFC 2920 allows the message
        content first in a group): one round trip a mail. The caller must then send that mail next; anything
        else, or a refusal of this message, ends the session (closed mid-DATA, the server keeps nothing).
        `meanwhile()` runs after the message is written and before its reply is read (the next mail is composed
        while the server reads this one)."""
        if self.announced is not None and self.announced != (sender, recipient):
            self.close()  # never happens when the caller keeps its word; nothing was sent in the announced DATA
            self.open()
        conn = self.conn
        try:
            options = ["SMTPUTF8"] if not (sender + recipient).isascii() and conn.has_extn("smtputf8") else []
            if self.pipelines:
                if then is not None and not (then[0] + then[1]).isascii():
                    then = None  # its envelope may need SMTPUTF8: sent in its own turn
                reply = self._send_pipelined(conn, sender, recipient, data, options, then, meanwhile)
            else:
                reply = self._send_in_steps(conn, sender, recipient, data, options, meanwhile)
            self.delivered += 1
            return reply
        except SmtpError:
            raise
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:
            self.close()
            raise classify(exc, self.profile) from None

    def _send_in_steps(self, conn, sender: str, recipient: str, data: bytes, options: list[str],
                       meanwhile=None) -> str:
        if options:  # SMTPUTF8: smtplib's mail() also switches the command encoding to UTF-8
            code, message = conn.mail(sender, options)
        else:
            code, message = conn.docmd("MAIL", f"FROM:{_angle(sender)}")
        if code != 250:
            raise self._refused("sender_refused", f"The server refused the sender {sender}", code, message, "mail")
        code, message = conn.docmd("RCPT", f"TO:{_angle(recipient)}")
        if code not in (250, 251):
            raise self._refused("recipient_refused", f"The server refused the recipient {recipient}", code, message,
                                "rcpt")
        code, message = conn.docmd("DATA")
        if code != 354:
            raise self._refused("rejected", "The server did not accept the message", code, message, "data")
        return self._end_data(conn, data, None, meanwhile)

    def _send_pipelined(self, conn, sender: str, recipient: str, data: bytes, options: list[str],
                        then: tuple[str, str] | None, meanwhile) -> str:
        if self.announced is None:
            conn.send(_envelope(sender, recipient, options))
        self.announced = None
        (mail_code, mail_message), (rcpt_code, rcpt_message), (data_code, data_message) = (
            conn.getreply(), conn.getreply(), conn.getreply())
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            conn.send(b".\r\n")  # a server that said 354 anyway gets an empty message ended, then RSET below
            conn.getreply()
        if mail_code != 250:
            raise self._refused("sender_refused", f"The server refused the sender {sender}", mail_code, mail_message,
                                "mail")
        if rcpt_code not in (250, 251):
            raise self._refused("recipient_refused", f"The server refused the recipient {recipient}", rcpt_code,
                                rcpt_message, "rcpt")
        if data_code != 354:
            raise self._refused("rejected", "The server did not accept the message", data_code, data_message, "data")
        return self._end_data(conn, data, then, meanwhile)

    def _end_data(self, conn, data: bytes, then: tuple[str, str] | None = None, meanwhile=None) -> str:
        """After 354: the message, dot-stuffed and ended (and the next mail's envelope behind it, if announced), and
        the server's last word on it."""
        if then is None:
            conn.send(_data_lines(data))
        else:
            conn.send(_data_lines(data) + _envelope(*then, []))
            self.announced = then
        if meanwhile is not None:
            meanwhile()
        code, message = conn.getreply()
        if code != 250:
            raise self._refused("rejected", "The server did not accept the message", code, message, "data")
        return f"{code} {_text(message)}"

    def _refused(self, kind: str, what: str, code: int, message: bytes, stage: str) -> SmtpError:
        scope = refusal_scope(stage, code, _text(message), self.delivered == 0)
        if scope == SESSION or code == 421 or self.announced is not None:
            self.close()  # nothing more goes through this session (or the next mail's envelope is on its way)
        else:
            try:
                self.conn.rset()
            except (smtplib.SMTPException, OSError):
                self.close()
        permanent = 500 <= code < 600
        hint = {"sender_refused": "Use a From address this server may send as.",
                "recipient_refused": "Check the address; the server does not accept mail for it." if permanent
                else "The server asks to try again later."}.get(kind, "")
        if scope == SESSION:
            hint = "The server refused this client for now: its mail waits, or goes through the next server."
        return SmtpError(kind, f"{what}: {code} {_text(message)}", hint, transient=not permanent,
                         broken=self.conn is None, code=code, scope=scope)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        announced, self.announced = self.announced, None
        if conn is None:
            return
        try:
            if conn.sock is not None and announced is None:  # mid-DATA a QUIT would be message text: just hang up
                conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            conn.close()


def _authenticate(conn, usable: list[str], username: str, password: str) -> tuple[int, bytes]:
    """AUTH with UTF-8 credentials (RFC 4616); smtplib's own login() only takes ASCII passwords."""
    b64 = lambda text: base64.b64encode(text.encode("utf-8")).decode("ascii")  # noqa: E731
    if "PLAIN" in usable:
        return conn.docmd("AUTH", "PLAIN " + b64(f"\0{username}\0{password}"))
    if "LOGIN" in usable:
        code, message = conn.docmd("AUTH", "LOGIN " + b64(username))
        return conn.docmd(b64(password)) if code == 334 else (code, message)
    conn.user, conn.password = username, password
    try:
        return conn.auth("CRAM-MD5", conn.auth_cram_md5)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error
    except UnicodeError:
        return 535, b"CRAM-MD5 cannot carry a password with non-ASCII characters"


def _text(message) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return " ".join(str(message).split())[:300]


def starttls_missing(p: SmtpProfile) -> SmtpError:
    return SmtpError("starttls_missing", f"The server on port {p.port} did not offer STARTTLS, which this server's "
                     "settings require. Nothing was sent unencrypted.",
                     "Use the port that offers STARTTLS (usually 587), or choose SSL/TLS on port 465.")


def wrong_port_tls(p: SmtpProfile) -> SmtpError:
    return SmtpError("wrong_port_tls", f"The server on port {p.port} expects TLS from the first byte (SSL/TLS), but "
                     f"this server is set to {'STARTTLS' if p.security == STARTTLS else 'no security'}.",
                     "Choose SSL/TLS for this port, or use port 587 with STARTTLS.")


def wrong_port_plain(p: SmtpProfile) -> SmtpError:
    return SmtpError("wrong_port_plain", f"The server on port {p.port} speaks plain SMTP, not SSL/TLS.",
                     "Choose STARTTLS for this port (usually 587 or 25), or use port 465 for SSL/TLS.")


def classify(exc: BaseException, p: SmtpProfile) -> SmtpError:
    """One SmtpError for whatever smtplib, ssl or the socket raised."""
    if isinstance(exc, SmtpError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return SmtpError("refused", f"Nothing accepts connections on {p.host} port {p.port}.",
                         "Check the host and port, and that the mail server is running.")
    if isinstance(exc, socket.gaierror):
        return SmtpError("name_not_found", f"The name {p.host} was not found.", "Check the hostname for typos.")
    if isinstance(exc, (TimeoutError, socket.timeout)) or "timed out" in str(exc):
        return SmtpError("timeout", f"The server did not answer within {p.timeout:g} second{'' if p.timeout == 1 else 's'}.",
                         "Check the host, the port and any firewall; raise the timeout for a slow server.")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SmtpError("not_supported", f"The server does not support what was asked: {exc}", "")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SmtpError("disconnected", "The server closed the connection before it confirmed the message.",
                         "It will be tried again; if this repeats, the server's log says why.")
    if isinstance(exc, smtplib.SMTPResponseException):
        permanent = 500 <= exc.smtp_code < 600
        return SmtpError("rejected" if permanent else "deferred", f"The server answered {exc.smtp_code} "
                         f"{_text(exc.smtp_error)}", "", transient=not permanent, code=exc.smtp_code)
    if isinstance(exc, ssl.SSLError):
        return SmtpError("tls_failed", f"The TLS handshake failed ({exc.reason or exc}).",
                         "Check the security setting for this port; the server may need a newer TLS version.")
    if isinstance(exc, UnicodeError):
        return SmtpError("address_not_ascii", "An address has non-ASCII characters and the server does not "
                         "accept them (no SMTPUTF8).", "", transient=False, broken=False)
    if isinstance(exc, OSError):
        return SmtpError("unreachable", f"The server cannot be reached ({exc.strerror or exc}).",
                         "Check the host, the port and any firewall.")
    return SmtpError("protocol", f"The SMTP conversation failed: {exc}", "")


def _speaks_tls(p: SmtpProfile) -> bool:
    """After a silent greeting: does the port complete a TLS handshake? (Any certificate: this only diagnoses.)"""
    try:
        peek_certificate(p.host, p.port, p.host, min(p.timeout, 5))
        return True
    except (OSError, ssl.SSLError):
        return False


def _speaks_plain_smtp(p: SmtpProfile) -> bool:
    """After a failed handshake: does the port greet in plain text?"""
    try:
        with socket.create_connection((p.host, p.port), timeout=min(p.timeout, 5)) as raw:
            return re.match(rb"^[2-5]\d\d[ -]", raw.recv(64)) is not None
    except OSError:
        return False


def _starttls_preamble(raw: socket.socket) -> None:
    """Greeting, EHLO and STARTTLS by hand, for reading the certificate offered after STARTTLS."""
    reader = raw.makefile("rb")
    _read_reply(reader)
    raw.sendall(b"EHLO spacemail.localdomain\r\n")
    _read_reply(reader)
    raw.sendall(b"STARTTLS\r\n")
    _read_reply(reader)
    reader.close()


def _read_reply(reader) -> None:
    while True:
        line = reader.readline(1024)
        if not line or line[3:4] != b"-":
            return
