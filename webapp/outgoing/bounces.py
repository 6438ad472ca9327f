"""Bounces: a signed VERP envelope sender per mail, the bounce mailbox fetched every minute, each bounce matched,
classified (flufl.bounce's detectors, RFC 3464 fields where present) and scored; past the threshold the address
is suppressed until its owner or an admin gives it another chance."""
import hashlib
import hmac
import logging
import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import getaddresses

from flask import current_app
from flufl.bounce import all_failures
from sqlalchemy import func, select, update

from webapp.archive.mailbox import drain
from webapp.extensions import db
from webapp.mailnet import ConnectionData, MailboxError
from webapp.notify.replies import save_connection
from webapp.oauth.credentials import mailbox_settings
from webapp.outgoing import limits, stats
from webapp.outgoing.models import (
    HARD, QUEUED, SOFT, SUPPRESSED, Bounce, BounceMailbox, OutboundMail, Suppression,
)
from webapp.outgoing.queue import wake_sender
from webapp.outgoing.suppression import UNSUPPRESSED_KINDS, suppression_of  # noqa: F401 (the routes use it)

log = logging.getLogger(__name__)
SCORES = {HARD: 2, SOFT: 1}  # Discourse's weights: two hard bounces, or four soft ones, at the default threshold
MAX_BYTES = 2 * 1024 * 1024  # of a bounce parsed (the original message it quotes may be large)
KEEP_RAW = 256 * 1024  # of one kept for an admin to read
FETCH_BATCHES, BATCH = 5, 200
_STATUS = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_REPLY = re.compile(r"(?<!\d)[45]\d\d[ -][A-Za-z<#]")
_AUTO_REPLY_SUBJECT = re.compile(r"out of (the )?office|automatic reply|auto.?reply|auto.?response|vacation|"
                                 r"abwesen|absence|away from|r[ée]ponse automatique|risposta automatica", re.I)
_BOUNCE_SUBJECT = re.compile(r"undeliver|deliver(y|ed) (status|failure|has failed)|not (be )?delivered|failure|"
                             r"returned mail|rejected|bounce|mail system error|nondeliverable", re.I)


def mailbox() -> BounceMailbox:
    row = db.session.get(BounceMailbox, 1)
    if row is None:
        row = BounceMailbox(id=1, threshold=4, expire_days=30)
        db.session.add(row)
        db.session.flush()
    return row


def save_mailbox(box: BounceMailbox, enabled: bool, address: str, threshold: int, expire_days: int,
                 data: ConnectionData, user=None) -> None:
    """Save the bounce mailbox, by the rules of every service mailbox (replies.save_connection)."""
    save_connection(box, data, user)
    box.enabled, box.address, box.threshold, box.expire_days = enabled, address.strip(), threshold, expire_days


def _signature(mail_id: int) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"bounce:{mail_id}".encode(), hashlib.sha256).hexdigest()[:12]


def envelope_sender():
    """A function mail id -> bounces+<id>-<signature>@domain, or one that gives None when bounces are off (the
    server's From address is the envelope sender then); the mailbox is read once per batch."""
    box = db.session.get(BounceMailbox, 1)
    if box is None or not box.enabled or "@" not in box.address:
        return lambda _mail_id: None
    local, _, domain = box.address.partition("@")
    return lambda mail_id: f"{local}+{mail_id}-{_signature(mail_id)}@{domain}"


def _verp(headers) -> tuple[int, str] | None:
    """(mail id, signature) from the bounce's envelope recipient, as the mailbox's server recorded it."""
    box = db.session.get(BounceMailbox, 1)
    local = (box.address.partition("@")[0] if box and box.address else "bounces").lower()
    pattern = re.compile(re.escape(local) + r"\+(\d{1,18})-([0-9a-f]{12})@", re.IGNORECASE)
    values = [str(value) for h in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
              for value in headers.get_all(h) or []]
    for _name, address in getaddresses(values):
        match = pattern.match(address)
        if match:
            return int(match.group(1)), match.group(2).lower()
    return None


def _subject(msg) -> str:
    try:
        return str(make_header(decode_header(str(msg.get("Subject", "")))))
    except (LookupError, ValueError, UnicodeError):
        return str(msg.get("Subject", ""))


def _looks_like_auto_reply(msg) -> bool:
    """An out-of-office or other automatic answer by its headers or subject: never a bounce."""
    if msg.get_content_type() == "multipart/report":
        return False
    subject = _subject(msg)
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or \
            str(msg.get("Precedence", "")).strip().lower() == "auto_reply" or _AUTO_REPLY_SUBJECT.search(subject):
        return not _BOUNCE_SUBJECT.search(subject)
    return False


def _dsn_fields(msg, recipient: str | None) -> tuple[str | None, str | None, str | None]:
    """(action, status, diagnostic) of the recipient's RFC 3464 block, or of the first failed or delayed one."""
    blocks = []
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status" and isinstance(part.get_payload(), list):
            blocks += [b for b in part.get_payload()[1:] if b.get("Action") or b.get("Status")]
    def rcpt(block):
        return str(block.get("Final-Recipient") or block.get("Original-Recipient") or "").rpartition(";")[2].strip()
    ranked = sorted(blocks, key=lambda b: (rcpt(b).lower().strip("<>") != (recipient or "").lower(),
                                           str(b.get("Action", "")).strip().lower() not in ("failed", "delayed")))
    if not ranked:
        return None, None, None
    block = ranked[0]
    status = _STATUS.search(str(block.get("Status", "")))
    diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).rpartition(";")[2].split()) or None
    return str(block.get("Action", "")).strip().lower() or None, status.group(0) if status else None, diagnostic


def _text_diagnostic(msg) -> tuple[str | None, str | None]:
    """For a bounce that is not a DSN: the first enhanced status code and the SMTP answer line near it."""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        text = part.get_payload(decode=True) or b""
        try:
            text = text[:200_000].decode(part.get_content_charset() or "latin-1", "replace")
        except LookupError:
            text = text[:200_000].decode("latin-1")
        for line in text.splitlines():
            found = _STATUS.search(line) or _SMTP_REPLY.search(line)
            if found:
                status = _STATUS.search(line)
                return status.group(0) if status else None, " ".join(line.split())[:500]
    return None, None


def classify(msg, recipient: str | None) -> tuple[str, str | None, str | None]:
    """(hard | soft | not_a_bounce, status, diagnostic) of one returned message: the DSN's own verdict where
    there is one (failed: hard, the MTA gave up; delayed: soft), else flufl.bounce's detectors."""
    action, status, diagnostic = _dsn_fields(msg, recipient)
    if action in ("delivered", "relayed", "expanded"):
        return "not_a_bounce", status, diagnostic
    if action == "failed":
        return HARD, status, diagnostic
    if action == "delayed":
        return SOFT, status, diagnostic
    temporary, permanent = all_failures(msg)
    if not status:
        status, diagnostic = _text_diagnostic(msg)
    if permanent:
        return HARD, status, diagnostic
    if temporary:
        return SOFT, status, diagnostic
    return "not_a_bounce", status, diagnostic


def handle(raw: bytes) -> Bounce:
    """Record one message from the bounce mailbox; suppress its address when its score reaches the threshold.
    Never raises on hostile mail; the same bytes twice count once."""
    digest = hashlib.sha256(raw).hexdigest()
    known = db.session.scalar(select(Bounce).where(Bounce.sha256 == digest))
    if known is not None:
        return known
    msg = message_from_bytes(raw[:MAX_BYTES], policy=policy.compat32)
    bounce = Bounce(sha256=digest, received_at=limits.clock(), from_header=_header(msg, "From"),
                    subject=_header(msg, "Subject"), counted=True)
    try:
        _match_and_classify(bounce, msg)
    except Exception as exc:  # a detector choking on hostile mail: the bounce is kept and listed, not lost
        log.exception("a bounce could not be classified")
        bounce.outcome, bounce.diagnostic = "unmatched", f"Could not be read ({type(exc).__name__})."
    if bounce.outcome not in (HARD, SOFT, "auto_reply"):
        bounce.raw = raw[:KEEP_RAW]
    db.session.add(bounce)
    db.session.flush()
    if bounce.outcome in (HARD, SOFT):
        stats.add(bounced=1)
        _score(bounce)
    return bounce


def _header(msg, name: str) -> str:
    return " ".join(str(msg.get(name, "")).split())[:300]


def _match_and_classify(bounce: Bounce, msg) -> None:
    verp = _verp(msg)
    if verp is None:
        bounce.outcome, bounce.diagnostic = "unmatched", "Not sent to a bounce address of a mail."
        return
    mail_id, signature = verp
    if not hmac.compare_digest(signature, _signature(mail_id)):
        bounce.outcome, bounce.diagnostic = "forged", f"The bounce address of mail {mail_id} has a wrong signature."
        return
    bounce.mail_id = mail_id
    mail = db.session.get(OutboundMail, mail_id)
    recipient = mail.recipient.lower() if mail else None
    if _looks_like_auto_reply(msg):
        bounce.outcome, bounce.address = "auto_reply", recipient
        return
    outcome, status, diagnostic = classify(msg, recipient)
    if outcome == "not_a_bounce" and str(msg.get("Auto-Submitted", "no")).strip().lower().startswith("auto-repl"):
        outcome = "auto_reply"
    if recipient is None:  # the sent row is gone (a week): the report's own recipient
        temporary, permanent = all_failures(msg)
        found = sorted(permanent or temporary)
        recipient = found[0].decode("utf-8", "replace").lower() if found else None
    bounce.outcome, bounce.address, bounce.status = outcome, recipient, status
    bounce.diagnostic = (diagnostic or "")[:1000] or None
    if recipient is None and outcome in (HARD, SOFT):
        bounce.outcome = "unmatched"


def score(address: str) -> int:
    """Hard bounces count 2, soft 1, each mail once (its hardest), those older than the mailbox's expiry not."""
    box = mailbox()
    since = limits.clock() - timedelta(days=box.expire_days or 30)
    rows = db.session.execute(select(Bounce.mail_id, Bounce.outcome).where(
        Bounce.address == address, Bounce.counted, Bounce.outcome.in_((HARD, SOFT)), Bounce.received_at >= since))
    per_mail: dict = {}
    for mail_id, outcome in rows:
        per_mail[mail_id] = max(per_mail.get(mail_id, 0), SCORES[outcome])
    return sum(per_mail.values())


def _score(bounce: Bounce) -> None:
    total = score(bounce.address)
    if total >= (mailbox().threshold or 4) and db.session.get(Suppression, bounce.address) is None:
        reason = " ".join(p for p in (bounce.status, bounce.diagnostic) if p) or "the mail came back undelivered"
        suppress(bounce.address, reason[:1000], total)


def suppress(address: str, reason: str, total: int = 0) -> int:
    """No more mail to `address`: what is queued for it is held as "suppressed". Returns how many were held."""
    address = address.lower()
    db.session.merge(Suppression(address=address, reason=reason, score=total, created_at=limits.clock()))
    held = db.session.execute(update(OutboundMail).where(
        func.lower(OutboundMail.recipient) == address, OutboundMail.state == QUEUED,
        OutboundMail.kind.not_in(UNSUPPRESSED_KINDS)).values(
        state=SUPPRESSED, last_error=f"Held: mail to this address bounced ({reason[:300]})")).rowcount
    stats.add(suppressed=held)
    log.warning("mail to %s suppressed after bounces (score %d): %s", address, total, reason)
    return held


def lift(address: str) -> int:
    """Another chance (the person's Try again, or an admin's Remove): earlier bounces stop counting and the mail
    held for the address goes out. Returns how many mails were released."""
    address = (address or "").lower()
    db.session.execute(update(Bounce).where(Bounce.address == address).values(counted=False))
    row = db.session.get(Suppression, address)
    if row is not None:
        db.session.delete(row)
    released = db.session.execute(update(OutboundMail).where(
        func.lower(OutboundMail.recipient) == address, OutboundMail.state == SUPPRESSED).values(
        state=QUEUED, next_attempt_at=limits.clock(), last_error=None)).rowcount
    if released:
        wake_sender()
    return released


def fetch() -> int:
    """Fetch the bounce mailbox: each message recorded and committed, then deleted on the server."""
    box = db.session.get(BounceMailbox, 1)
    if box is None or not box.enabled or not box.host or not box.has_stored_secret:
        return 0
    handled = 0
    try:
        handled = drain(mailbox_settings(box), handle, db.session.commit, FETCH_BATCHES, BATCH)
        box.last_result = f"Fetched {handled} message{'' if handled == 1 else 's'}."
    except MailboxError as exc:
        db.session.rollback()
        box = db.session.get(BounceMailbox, 1)
        box.last_result = exc.message
    box.last_fetch_at = limits.clock()
    db.session.commit()
    return handled
