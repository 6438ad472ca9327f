"""Reply by email: a signed plus-address per (reader, page); a reply from that reader becomes a comment."""
import hashlib
import hmac
import logging
import re
from email import message_from_bytes, policy
from email.utils import getaddresses, parseaddr

from flask import current_app
from sqlalchemy import select

from webapp.archive.mailbox import drain
from webapp.archive.parse import parse
from webapp.auth.models import User
from webapp.content.models import Page
from webapp.content.services import add_comment
from webapp.extensions import db
from webapp.errors import UserError
from webapp.mailnet import ConnectionData, MailboxError
from webapp.oauth.credentials import SignInChoiceError, mailbox_settings, resolve_mailbox
from webapp.notify.models import ReplyMailbox, ReplyReceipt
from webapp.spaces.access import can
from webapp.spaces.models import VIEW, Space
from webapp.timeutil import utcnow

log = logging.getLogger(__name__)
_TOKEN = re.compile(r"\+r(\d+)-(\d+)-([0-9a-f]{20})@", re.IGNORECASE)
_QUOTE_START = re.compile(r"^(On .{3,200} wrote:|Am .{3,200} schrieb .{0,80}:|-----Original Message-----|"
                          r"_{8,}|From: .+)\s*$")


def mailbox() -> ReplyMailbox:
    row = db.session.get(ReplyMailbox, 1)
    if row is None:
        row = ReplyMailbox(id=1)
        db.session.add(row)
        db.session.flush()
    return row


def save_mailbox(box: ReplyMailbox, enabled: bool, address: str, data: ConnectionData, user=None) -> None:
    """Save the reply mailbox (the rules of every service mailbox: save_connection)."""
    save_connection(box, data, user)
    box.enabled, box.address = enabled, address


def save_connection(box, data: ConnectionData, user=None) -> None:
    """A service mailbox's connection (replies, bounces): its password typed again for any new endpoint (the one
    rule, mailnet), a provider's sign-in checked like a mail account's. Raises UserError."""
    has_secret = box.has_stored_secret
    problem = data.secret_problem(box.endpoint if has_secret else None, has_secret)
    if problem:
        raise UserError(problem)
    try:
        grant_id = resolve_mailbox(data, user, box.oauth_grant_id)
    except SignInChoiceError as exc:
        raise UserError(str(exc)) from None
    box.apply_connection(data, grant_id)


def _signature(user_id: int, page_id: int) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"reply:{user_id}:{page_id}".encode(), hashlib.sha256).hexdigest()[:20]


def reply_address(user_id: int, page_id: int) -> str | None:
    """replies+r<user>-<page>-<signature>@host, or None when reply by email is off."""
    addresser = reply_addresser()
    return addresser(user_id, page_id) if addresser else None


def reply_addresser():
    """A function (user id, page id) -> reply address, or None when reply by email is off: the mailbox is read
    once for a whole fan-out."""
    box = db.session.get(ReplyMailbox, 1)
    if box is None or not box.enabled or "@" not in box.address:
        return None
    local, _, domain = box.address.partition("@")
    return lambda user_id, page_id: f"{local}+r{user_id}-{page_id}-{_signature(user_id, page_id)}@{domain}"


def strip_quoted(text: str) -> str:
    """The new text of a reply: quoted lines, the "On … wrote:" block and the signature removed."""
    kept = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.rstrip() == "--" or _QUOTE_START.match(line.strip()):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line.rstrip())
    return "\n".join(kept).strip()


def handle(raw: bytes) -> str:
    """Turn one reply into a comment, or say why not. Never raises on hostile mail."""
    digest = hashlib.sha256(raw).hexdigest()
    if db.session.scalar(select(ReplyReceipt.id).where(ReplyReceipt.sha256 == digest)) is not None:
        return "already handled"
    outcome, comment = _comment_from(raw)
    db.session.add(ReplyReceipt(sha256=digest, outcome=outcome[:200], comment_id=getattr(comment, "id", None)))
    if comment is None:
        log.warning("reply by email rejected: %s", outcome)
    return outcome


def _comment_from(raw: bytes):
    headers = message_from_bytes(raw[:200_000], policy=policy.compat32)
    if (headers.get("Auto-Submitted") or "no").strip().lower() != "no" or headers.get("List-Id"):
        return "ignored: an automatic reply", None
    addresses = " ".join(f"<{a}>" for _n, a in getaddresses(
        [str(headers.get(h, "")) for h in ("To", "Cc", "Delivered-To", "X-Original-To")]))
    match = _TOKEN.search(addresses)
    if match is None:
        return "rejected: no reply address", None
    user_id, page_id, signature = int(match.group(1)), int(match.group(2)), match.group(3).lower()
    if not hmac.compare_digest(signature, _signature(user_id, page_id)):
        return "rejected: bad signature", None
    user, page = db.session.get(User, user_id), db.session.get(Page, page_id)
    sender = parseaddr(str(headers.get("From", "")))[1].lower()
    if user is None or page is None or not user.active or sender != user.email.lower():
        return f"rejected: unknown sender {sender[:100]}", None
    if not can(user, db.session.get(Space, page.space_id), VIEW):
        return "rejected: the sender can no longer view the page", None
    body = strip_quoted(parse(raw, 5 * 1024 * 1024).text)
    if not body:
        return "rejected: empty reply", None
    return f"comment on page {page.id} by {user.username}", add_comment(page, user, body[:20_000], via="email")


def fetch() -> int:
    """Fetch the reply mailbox: each message handled and committed, then deleted on the server."""
    box = db.session.get(ReplyMailbox, 1)
    if box is None or not box.enabled or not box.host or not box.has_stored_secret:
        return 0
    handled = 0
    try:
        handled = drain(mailbox_settings(box), handle, db.session.commit)
        box.last_result = f"Fetched {handled} repl{'y' if handled == 1 else 'ies'}."
    except MailboxError as exc:
        db.session.rollback()
        box = db.session.get(ReplyMailbox, 1)
        box.last_result = exc.message
    box.last_fetch_at = utcnow()
    db.session.commit()
    return handled
