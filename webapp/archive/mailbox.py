"""POP3 and IMAP sessions: connect (verified TLS), list, download, delete. One interface for both."""
import base64
import contextlib
import imaplib
import poplib
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

from webapp.mailnet import (
    OAUTH, MailboxError, MailboxSettings, checked_address, check_fields, connect_socket, describe_untrusted,
    oauth_abort, oauth_mechanism, oauth_response, peek_certificate, timed_out, tls_context,
)

MAX_LINE = 64 * 1024 * 1024  # a single line of a message may be long (base64 without wraps, HTML)


@dataclass
class ServerMessage:
    server_id: str  # POP3 UIDL, or IMAP "uidvalidity:uid"
    size: int
    ref: int  # POP3 message number or IMAP UID, valid within this session
    flagged_deleted: bool = False  # IMAP \Deleted: another client's pending deletion, or ours cut short


@dataclass
class SessionInfo:
    tls_version: str | None = None
    capabilities: list[str] = field(default_factory=list)
    message_count: int = 0
    removal: str = ""  # how fetched mail leaves the server, in words (Test Connection says it)
    offers_starttls: bool = False  # a plain session to a server that would have encrypted it


@contextlib.contextmanager
def translate_errors(settings: MailboxSettings, address: str):
    """Every failure leaves as one MailboxError; nothing a non-mail service said is echoed."""
    try:
        yield
    except MailboxError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise MailboxError("certificate_untrusted", describe_untrusted(exc, lambda: _peek(settings, address)) +
                           " If this server uses its own CA, add that CA certificate (PEM) to the account.") from None
    except ssl.SSLError:
        raise MailboxError("tls_failed", "TLS could not be negotiated. The port may expect plain text "
                                         "(choose POP or IMAP with STARTTLS) or the server's TLS is outdated.") from None
    except (TimeoutError, socket.timeout):
        raise timed_out(settings.timeout) from None
    except (ConnectionError, EOFError, imaplib.IMAP4.abort):
        raise MailboxError("closed", "The server closed the connection unexpectedly.") from None
    except (imaplib.IMAP4.error, poplib.error_proto):
        raise MailboxError("protocol_error", "The server gave an unexpected answer; the worker log has the "
                                             "command that failed.") from None


def _peek(settings: MailboxSettings, address: str) -> bytes:
    preamble = None
    if not settings.implicit_tls:
        command = b"a1 STARTTLS\r\n" if settings.is_imap else b"STLS\r\n"

        def preamble(sock):
            sock.recv(4096)
            sock.sendall(command)
            sock.recv(4096)

    return peek_certificate(address, settings.port, settings.host, settings.timeout, preamble)


def not_a_mail_server(settings: MailboxSettings) -> MailboxError:
    kind = "IMAP" if settings.is_imap else "POP3"
    return MailboxError("not_mail_server", f"The server on port {settings.port} did not answer like a {kind} server. "
                                           "Check the protocol and the port.")


def starttls_missing() -> MailboxError:
    return MailboxError("starttls_missing", "The server does not offer STARTTLS, which this account requires. "
                                            "Use POPS or IMAPS if the server has a TLS port.")


def login_refused() -> MailboxError:
    return MailboxError("login_refused", "The server refused the username or password.")


def token_refused() -> MailboxError:
    return MailboxError("token_refused", "The server refused the access token for this username. Check that the "
                                         "username is the mailbox you signed in as (or one it may open), and that "
                                         "the mailbox allows IMAP or POP access.")


def oauth_not_offered(kind: str) -> MailboxError:
    return MailboxError("oauth_not_offered", f"The {kind} server offers no sign-in with a token (XOAUTH2 or "
                                             "OAUTHBEARER): use a password for it, or check the host.")


class _MailboxInUse(Exception):
    """POP3's [IN-USE] (RFC 2449): another session holds the mailbox's lock."""


# Dovecot itself waits ~10 s for the lock before it answers [IN-USE]. A session that is ending (a killed worker's,
# whose server process noticed late) is given one more try; a lock held longer is another client's, and the
# next fetch tries again.
IN_USE_WAITS = (1.0,)


def uid_set(uids) -> str:
    """1,2,3,7 -> '1:3,7' so a batch stays one short command."""
    uids = sorted(uids)
    parts, start, prev = [], None, None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def open_session(settings: MailboxSettings):
    """A signed-in session, over TLS when the settings say so, to the address the host policy checked (the one
    place mailbox connections resolve a name, so no caller can reach a host the policy forbids)."""
    check_fields(settings)
    address = checked_address(settings.host, settings.port)
    cls = IMAPSession if settings.is_imap else POP3Session
    return cls(settings, address)


def drain(settings: MailboxSettings, handle, commit, batches: int = 1, batch: int = 200) -> int:
    """Read a service mailbox (replies, bounces): each message handled, each batch committed, and only then
    deleted on the server. POP3 ends its session with the deletion, so it reads one batch per call."""
    handled = 0
    session = open_session(settings)
    try:
        for _round in range(batches):
            items = [i for i in session.list_messages() if not i.flagged_deleted][:batch]
            if not items:
                break
            for _item, raw in session.download(items):
                handle(raw)
                handled += 1
            commit()  # durable before anything is deleted
            session.delete(items)
            if session.deletes_end_session:
                break
    finally:
        session.close()
    return handled


class _ToCheckedAddress:
    """Connect to the address the host policy checked, while TLS still verifies the host name."""

    def _create_socket(self, timeout):
        sock = connect_socket(self._address, self.port, timeout)
        return self._context.wrap_socket(sock, server_hostname=self.host) if self._context else sock


class _POP3(_ToCheckedAddress, poplib.POP3):
    def __init__(self, settings: MailboxSettings, address: str, context):
        self._address, self._context = address, context
        self.sock = self.file = None
        try:
            super().__init__(settings.host, settings.port, settings.timeout)
        except BaseException:  # poplib leaves the socket open when the greeting fails
            with contextlib.suppress(OSError):
                self.close()
            raise


class POP3Session:
    """POP3: deletions take effect at QUIT, so `delete` ends the session; reopen for the next batch."""

    deletes_end_session = True

    def __init__(self, settings: MailboxSettings, address: str) -> None:
        self.settings, self.info, self.open = settings, SessionInfo(), False
        context = tls_context(settings.trusted_ca_pem)
        for wait in (*IN_USE_WAITS, None):
            try:
                self._connect(settings, address, context)
                break
            except _MailboxInUse:
                if wait is None:
                    raise MailboxError("mailbox_in_use", "The server says another POP3 session holds the mailbox "
                                       "(another mail client, or a fetch still ending). The next fetch tries "
                                       "again.") from None
                time.sleep(wait)
        self.open = True

    def _connect(self, settings: MailboxSettings, address: str, context) -> None:
        with translate_errors(settings, address):
            try:
                self.pop = _POP3(settings, address, context if settings.implicit_tls else None)
            except poplib.error_proto:
                raise not_a_mail_server(settings) from None
            try:
                self._start(settings, context)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.pop.close()
                raise

    def _start(self, settings: MailboxSettings, context) -> None:
        capabilities = self._capabilities()
        self.info.offers_starttls = not settings.uses_starttls and not isinstance(self.pop.sock, ssl.SSLSocket) \
            and "STLS" in capabilities
        if settings.uses_starttls:
            if "STLS" not in capabilities:
                raise starttls_missing()
            self.pop.stls(context)
            capabilities = self._capabilities()
        self.info.capabilities = sorted(capabilities)
        self.info.removal = "Fetched mail is removed from the server (DELE), after it is archived."
        self.pipelining = "PIPELINING" in capabilities
        if isinstance(self.pop.sock, ssl.SSLSocket):
            self.info.tls_version = self.pop.sock.version()
        try:
            if settings.auth == OAUTH:
                self._sign_in_with_token(settings, capabilities)
            else:
                self.pop.user(settings.username)
                self.pop.pass_(settings.password)
        except poplib.error_proto as exc:
            if exc.args and isinstance(exc.args[0], bytes) and exc.args[0].startswith(b"-ERR [IN-USE]"):
                raise _MailboxInUse() from None
            raise (token_refused() if settings.auth == OAUTH else login_refused()) from None
        self.info.message_count = self.pop.stat()[0]

    def _sign_in_with_token(self, settings: MailboxSettings, capabilities: dict) -> None:
        """AUTH (RFC 5034) with XOAUTH2 or OAUTHBEARER; the response on its own line, as Microsoft's servers want."""
        mechanism = oauth_mechanism(capabilities.get("SASL", []))
        if mechanism is None:
            raise oauth_not_offered("POP3")
        self.pop._shortcmd(f"AUTH {mechanism}")  # "+ ": the server waits for the client's response
        message = oauth_response(mechanism, settings.username, settings.password, settings.host, settings.port)
        answer = self.pop._shortcmd(base64.b64encode(message).decode("ascii"))
        if not answer.startswith(b"+OK"):  # "+ <error>": answer it, and the server says -ERR
            self.pop._shortcmd(base64.b64encode(oauth_abort(mechanism)).decode("ascii"))
            raise poplib.error_proto(b"-ERR token refused")

    def _capabilities(self) -> dict:
        try:
            return self.pop.capa()
        except poplib.error_proto:
            return {}

    def list_messages(self) -> list[ServerMessage]:
        with translate_errors(self.settings, ""):
            uids = dict(line.split(b" ", 1) for line in self.pop.uidl()[1])
            sizes = dict(line.split(b" ", 1) for line in self.pop.list()[1])
        return [ServerMessage(uid.strip().decode("ascii", "replace"), int(sizes.get(num, b"0")), int(num))
                for num, uid in uids.items()]

    def _send(self, commands: list[bytes]) -> None:
        self.pop.sock.sendall(b"".join(commands))

    def _status_ok(self) -> bool:
        line = self.pop.file.readline(MAX_LINE)
        if not line:
            raise EOFError
        return line.startswith(b"+OK")

    def _read_multiline(self) -> bytes:
        lines = []
        while True:
            line = self.pop.file.readline(MAX_LINE)
            if not line:
                raise EOFError
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)

    def download(self, items: list[ServerMessage]):
        """Yield (item, raw bytes) in order; RETRs are pipelined when the server allows it."""
        with translate_errors(self.settings, ""):
            step = len(items) if self.pipelining else 1
            for start in range(0, len(items), step):
                chunk = items[start:start + step]
                self._send([b"RETR %d\r\n" % item.ref for item in chunk])
                for item in chunk:
                    if self._status_ok():
                        yield item, self._read_multiline()

    def delete(self, items: list[ServerMessage]) -> None:
        """DELE each, then QUIT, which is when the server removes them."""
        with translate_errors(self.settings, ""):
            if items:
                step = len(items) if self.pipelining else 1
                for start in range(0, len(items), step):
                    chunk = items[start:start + step]
                    self._send([b"DELE %d\r\n" % item.ref for item in chunk])
                    for _ in chunk:
                        self._status_ok()
            try:
                self.pop.quit()
            except poplib.error_proto:
                raise MailboxError("delete_failed", "The server did not remove the fetched messages.") from None
        self.open = False

    def close(self) -> None:
        if self.open:
            try:
                self.pop.quit()
            except Exception:  # a session the server dropped: quit() raises before it closes the socket
                with contextlib.suppress(Exception):
                    self.pop.close()
        self.open = False


class _IMAP(_ToCheckedAddress, imaplib.IMAP4):
    def __init__(self, settings: MailboxSettings, address: str, context):
        self._address, self._context = address, context
        super().__init__(settings.host, settings.port, settings.timeout)  # imaplib closes itself on failure


_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_ITEM = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)|FLAGS \(([^)]*)\)")


class IMAPSession:
    """IMAP: BODY.PEEK[] downloads; deletes are UID STORE \\Deleted + UID EXPUNGE, never a bare EXPUNGE."""

    deletes_end_session = False

    def __init__(self, settings: MailboxSettings, address: str) -> None:
        self.settings, self.info, self.open = settings, SessionInfo(), False
        context = tls_context(settings.trusted_ca_pem)
        with translate_errors(settings, address):
            try:
                self.imap = _IMAP(settings, address, context if settings.implicit_tls else None)
            except imaplib.IMAP4.error:
                raise not_a_mail_server(settings) from None
            try:
                self._start(settings, context)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.imap.shutdown()
                raise
        self.open = True

    def _start(self, settings: MailboxSettings, context) -> None:
        self.info.offers_starttls = not settings.uses_starttls and not isinstance(self.imap.sock, ssl.SSLSocket) \
            and "STARTTLS" in self.imap.capabilities
        if settings.uses_starttls:
            if "STARTTLS" not in self.imap.capabilities:
                raise starttls_missing()
            self.imap.starttls(context)
        if isinstance(self.imap.sock, ssl.SSLSocket):
            self.info.tls_version = self.imap.sock.version()
        if settings.auth == OAUTH:
            self._sign_in_with_token(settings)
        else:
            if "LOGINDISABLED" in self.imap.capabilities:
                raise MailboxError("login_refused", "The server allows no sign-in without TLS: require STARTTLS "
                                                    "or use IMAPS.")
            try:
                self.imap.login(settings.username, settings.password)
            except imaplib.IMAP4.error:
                raise login_refused() from None
        self.info.capabilities = sorted(self.imap.capability()[1][0].decode("ascii", "replace").split())
        typ, data = self.imap.select('"%s"' % imap_utf7(settings.folder).replace("\\", "\\\\").replace('"', '\\"'))
        if typ != "OK":
            raise MailboxError("folder_missing", f"The folder {settings.folder} does not exist on the server.")
        self.info.message_count = int(data[0] or 0)
        self.uidvalidity = int(self.imap.response("UIDVALIDITY")[1][0])
        self.uidplus = "UIDPLUS" in self.info.capabilities
        self.move = "MOVE" in self.info.capabilities
        self.trash = self._trash_folder() if not self.uidplus and self.move else None
        self.info.removal = self._removal_words(settings)

    def _removal_words(self, settings: MailboxSettings) -> str:
        if self.uidplus:
            return "Fetched mail is removed from the server (UID EXPUNGE), after it is archived."
        if self.move and self.trash:
            return f"The server lacks UIDPLUS: fetched mail is moved to its {self.trash} folder (MOVE)."
        if settings.exclusive:
            return ("The server lacks UIDPLUS: fetched mail is removed with a plain EXPUNGE, as this mailbox is "
                    "Spacemail's alone (checked each time that no one else marked mail for deletion).")
        return ("The server lacks UIDPLUS and MOVE: fetched mail stays on the server, unless you tick “This "
                "mailbox is Spacemail's alone”.")

    def _trash_folder(self) -> str | None:
        """The folder marked \\Trash (RFC 6154), else one named Trash."""
        with contextlib.suppress(imaplib.IMAP4.error):
            typ, data = self.imap.list()
            names = []
            for line in data if typ == "OK" else []:
                if isinstance(line, bytes):
                    m = re.match(rb'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', line)
                    if m:
                        name = m.group("name").strip().strip(b'"').decode("utf-8", "replace")
                        if b"\\trash" in m.group("flags").lower():
                            return name
                        names.append(name)
            return next((n for n in names if n.lower() == "trash"), None)
        return None

    def _sign_in_with_token(self, settings: MailboxSettings) -> None:
        """AUTHENTICATE XOAUTH2 or OAUTHBEARER, whichever the server advertises (OAUTHBEARER, the standard, first)."""
        mechanism = oauth_mechanism(c[5:] for c in self.imap.capabilities if c.startswith("AUTH="))
        if mechanism is None:
            raise oauth_not_offered("IMAP")
        message = oauth_response(mechanism, settings.username, settings.password, settings.host, settings.port)
        answers = iter([message])
        try:  # a second challenge is the server's error: answer it so the server ends the exchange with NO
            self.imap.authenticate(mechanism, lambda _challenge: next(answers, oauth_abort(mechanism)))
        except imaplib.IMAP4.error:
            raise token_refused() from None

    def list_messages(self) -> list[ServerMessage]:
        """Every message, with its \\Deleted flag: the caller leaves other clients' pending deletions alone but
        finishes its own (a worker killed between STORE and EXPUNGE leaves them flagged)."""
        if not self.info.message_count:
            return []
        with translate_errors(self.settings, ""):
            typ, data = self.imap.uid("FETCH", "1:*", "(UID RFC822.SIZE FLAGS)")
        found = []
        for line in data:
            if not isinstance(line, bytes):
                continue
            uid = size = None
            flags = b""
            for m in _FETCH_ITEM.finditer(line):
                uid = int(m.group(1)) if m.group(1) else uid
                size = int(m.group(2)) if m.group(2) else size
                flags = m.group(3) if m.group(3) is not None else flags
            if uid is not None:
                found.append(ServerMessage(f"{self.uidvalidity}:{uid}", size or 0, uid, b"\\Deleted" in flags))
        return found

    def download(self, items: list[ServerMessage]):
        """One UID FETCH for the batch (the server streams it); yields (item, raw bytes)."""
        by_uid = {item.ref: item for item in items}
        with translate_errors(self.settings, ""):
            typ, data = self.imap.uid("FETCH", uid_set(by_uid), "(UID BODY.PEEK[])")
        pending = None
        for part in data:
            if isinstance(part, tuple):
                pending = part
                m = _FETCH_UID.search(part[0])
                if m and int(m.group(1)) in by_uid:
                    yield by_uid[int(m.group(1))], part[1]
                    pending = None
            elif pending is not None and isinstance(part, bytes):
                m = _FETCH_UID.search(part)  # UID after the literal
                if m and int(m.group(1)) in by_uid:
                    yield by_uid[int(m.group(1))], pending[1]
                pending = None

    def delete(self, items: list[ServerMessage]) -> None:
        """UID EXPUNGE (UIDPLUS) of just these; else MOVE to the Trash; else, only for a mailbox that is Spacemail's
        alone, a plain EXPUNGE after UID SEARCH DELETED finds nothing another client marked."""
        if not items:
            return
        uids = uid_set(item.ref for item in items)
        with translate_errors(self.settings, ""):
            if self.uidplus:
                self.imap.uid("STORE", uids, "+FLAGS.SILENT", r"(\Deleted)")
                typ, _ = self.imap.uid("EXPUNGE", uids)
            elif self.move and self.trash:
                typ, _ = self.imap.uid("MOVE", uids, '"%s"' % imap_utf7(self.trash).replace('"', '\\"'))
            elif self.settings.exclusive:
                typ, data = self.imap.uid("SEARCH", "DELETED")
                flagged = {int(u) for u in (data[0] or b"").split()} if typ == "OK" and data else set()
                if flagged - {item.ref for item in items}:  # ours (a fetch cut short after STORE) may go
                    raise MailboxError("delete_failed", "Another client marked messages in this mailbox for "
                                       "deletion, so a plain EXPUNGE would remove them too: nothing was removed.")
                self.imap.uid("STORE", uids, "+FLAGS.SILENT", r"(\Deleted)")
                typ, _ = self.imap.expunge()
            else:
                raise MailboxError("delete_unsupported", "the server lacks UIDPLUS and MOVE, so fetched messages "
                                   "cannot be removed without touching others (tick “This mailbox is Spacemail's "
                                   "alone” to allow a plain EXPUNGE)")
        if typ != "OK":
            raise MailboxError("delete_failed", "the server did not remove the fetched messages")

    def close(self) -> None:
        if self.open:
            try:
                self.imap.logout()
            except Exception:  # a session the server dropped: logout() raises before it closes the socket
                with contextlib.suppress(Exception):
                    self.imap.shutdown()
        self.open = False


def probe(settings: MailboxSettings) -> SessionInfo:
    """Test Connection: sign in, open the folder, count; change nothing."""
    session = open_session(settings)
    try:
        return session.info
    finally:
        session.close()


def imap_utf7(folder: str) -> str:
    """RFC 3501 modified UTF-7, so folders like 'Archiv/Über' can be selected."""
    out, pending = [], []

    def flush():
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            pending.clear()

    for ch in folder:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)
