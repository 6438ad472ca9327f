"""The Mail tab for readers: lists, search, threads, messages, attachments, source and mbox exports."""
import threading
import time
from collections import OrderedDict
from dataclasses import astuple
from io import BytesIO

from flask import Response, abort, flash, redirect, render_template, request, send_file, stream_with_context, url_for
from flask_login import current_user, login_required
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp.auth.feed_tokens import feed_token
from webapp.archive import bp, display, importing, reading, search, services, trash
from webapp.archive import query as operators
from webapp.archive.models import RUN_ACTIVE, ArchiveImport, Message, MessageRaw, Thread
from webapp.archive.routes import archive_space
from webapp.archive.sanitize import sanitize
from webapp.extensions import db
from webapp.archive.forms import ImportForm
from webapp.htmx import is_htmx, page_or_partial, partial
from webapp.jobs import JobRun
from webapp.params import arg_int
from webapp.spaces.access import can
from webapp.spaces.models import ADMIN, VIEW
from webapp.settings import reader_zone

INLINE_IMAGES = ("image/png", "image/gif", "image/jpeg", "image/webp")
SANDBOX_CSP = "sandbox; default-src 'none'"


def _filters() -> reading.Filters:
    args = request.args
    return reading.Filters(q=args.get("q", "").strip()[:200], sender=args.get("sender", "").strip()[:200],
                           month=args.get("month", "").strip()[:7], attachments=args.get("attachments") == "1",
                           order="relevance" if args.get("order") == "relevance" else "newest")


def page_offset() -> int:
    """How many items come before this page (the `n` of the pager's links), for "Messages 51-100"."""
    value = request.args.get("n", "")
    return min(int(value), 10**9) if value.isdigit() else 0


def _message(space, message_id) -> Message:
    message = db.session.get(Message, message_id)
    if message is None or message.space_id != space.id or message.deleted_at is not None:
        abort(404)
    return message


def _raw(message: Message) -> bytes:
    return db.session.scalar(select(MessageRaw.raw).where(MessageRaw.message_id == message.id)) or b""


def _shown(message: Message, raw: bytes | None = None) -> display.Display:
    return display.load(_raw(message) if raw is None else raw, message.parse_problem)


def _private(response: Response) -> Response:
    """Archived mail is never kept by shared caches (nor by htmx's history: historyCacheSize is 0)."""
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/spaces/<key>/mail")
@login_required
def mail(key):
    space = archive_space(key, VIEW)
    filters = _filters()
    view = "threads" if request.args.get("view") == "threads" and not filters.q else "messages"
    stamp = services.archive_stamp()
    results = _results(space, filters, view, request.args.get("before"), stamp)
    if is_htmx():
        response = Response(results)
        response.vary.add("HX-Request")
        return _private(response)
    is_admin = can(current_user, space, ADMIN)
    accounts = [a for a in services.accounts_of(space) if a.enabled] if is_admin else []
    runs = services.latest_runs(accounts)
    return _private(Response(render_template(
        "archive/mail.html", space=space, filters=filters, view=view, results=results, is_admin=is_admin,
        accounts=accounts, runs=runs, running=any(r.state in RUN_ACTIVE for r in runs.values()),
        count=services.message_count(space, stamp), feed_token=feed_token(current_user))))


_RENDERED: OrderedDict = OrderedDict()  # key -> (rendered list, when)
_RENDERED_LOCK = threading.Lock()
RENDERED_KEPT, RENDERED_SECONDS = 256, 60


def _results(space, filters, view: str, before: str | None, stamp: tuple) -> Markup:
    """The list of messages or threads, rendered: kept per process (the 256 most recent lists, a minute each)
    under the archive's stamp, because what a list shows changes only when mail arrives anywhere or goes to or
    from a trash. Nothing in it depends on the reader but their time zone. A minute bounds what SQLite's reuse
    of a purged newest id could otherwise bring back."""
    offset = page_offset()
    key = (stamp, space.id, space.key, space.created_at, astuple(filters), view, before, offset, reader_zone().key,
           request.script_root)
    now = time.monotonic()
    with _RENDERED_LOCK:
        hit = _RENDERED.get(key)
        if hit is not None and now - hit[1] < RENDERED_SECONDS:
            _RENDERED.move_to_end(key)
            return hit[0]
    context = {"space": space, "filters": filters, "view": view, "threads": [], "messages": [], "snippets": {},
               "offset": offset, "page_size": reading.PAGE}
    cursor = reading.decode_cursor(before)
    if view == "threads":
        context["threads"], context["cursor"] = reading.threads(space.id, filters, cursor)
        first = (context["threads"][0].last_date, context["threads"][0].id) if context["threads"] else None
    else:
        context["problems"] = operators.parse(filters.q).problems
        try:
            context["messages"], context["snippets"], context["cursor"] = reading.messages(space.id, filters, cursor,
                                                                                           zone=reader_zone())
        except search.PrefixTooBroad as exc:  # said beside the box, as a mistyped operator is
            context["problems"] = [*context["problems"], str(exc)]
        first = (context["messages"][0].date, context["messages"][0].id) if context["messages"] else None
    context["newer"] = reading.newer_cursor(space.id, filters, view, first) if cursor is not None else None
    rendered = Markup(render_template("archive/_mail_results.html", **context))
    with _RENDERED_LOCK:
        _RENDERED[key] = (rendered, now)
        _RENDERED.move_to_end(key)
        while len(_RENDERED) > RENDERED_KEPT:
            _RENDERED.popitem(last=False)
    return rendered


@bp.route("/spaces/<key>/mail/messages/<int:message_id>")
@login_required
def message(key, message_id):
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    shown = _shown(msg)
    text = display.text_to_html(shown.text) if shown.text is not None and shown.html is None else None
    has_remote_images = shown.html is not None and sanitize(shown.html, lambda cid: None, False)[1]
    return _private(Response(render_template("archive/message.html", space=space, m=msg, shown=shown, text=text,
                                             images=request.args.get("images") == "1",
                                             has_remote_images=has_remote_images)))


@bp.route("/spaces/<key>/mail/id/<path:msgid>")
@login_required
def permalink(key, msgid):
    """A message by its Message-ID: a link that outlives the archive's numbering (an export and re-import)."""
    space = archive_space(key, VIEW)
    msgid = msgid.strip().removeprefix("<").removesuffix(">")[:300]
    found = db.session.scalar(select(Message.id).where(
        Message.space_id == space.id, Message.message_id_header == msgid, Message.deleted_at.is_(None))
        .order_by(Message.id).limit(1))
    if found is None:
        abort(404, f"No message with the Message-ID <{msgid}> is in this archive: it may be in another space's, "
                   "not fetched yet, or in the trash.")
    return message(key, found)


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/body")
@login_required
def message_body(key, message_id):
    """The HTML body, sanitized, for a sandboxed iframe: no script, no remote loads until "show images"."""
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    shown = _shown(msg)
    images = request.args.get("images") == "1"

    def cid_url(cid: str):
        if cid in shown.cids:
            return url_for("archive.inline_image", key=space.key, message_id=msg.id, cid=cid)
        return None

    clean, _ = sanitize(shown.html or "", cid_url, images)
    response = Response(render_template("archive/body.html", html=Markup(clean)), mimetype="text/html")
    own = request.host_url.rstrip("/")
    response.headers["Content-Security-Policy"] = (
        "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox; "
        f"default-src 'none'; img-src data: {own}{' https: http:' if images else ''}; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "no-referrer"
    return _private(response)


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/cid/<path:cid>")
@login_required
def inline_image(key, message_id, cid):
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    raw = _raw(msg)
    index = display.load(raw, msg.parse_problem).cids.get(cid)
    found = display.part(raw, index) if index is not None else None  # the raw bytes are read once
    if found is None or found.get_content_type() not in INLINE_IMAGES:
        abort(404)
    response = Response(found.get_payload(decode=True) or b"", mimetype=found.get_content_type())
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    return _private(response)


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/parts/<int:index>")
@login_required
def attachment(key, message_id, index):
    """An attachment, always downloaded; types a browser would render as a page are sent as octet-stream."""
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    found = display.part(_raw(msg), index)
    if found is None:
        abort(404)
    ctype = found.get_content_type()
    if ctype in display.RISKY_TYPES or ctype.endswith(("+xml", "/xml")) or "html" in ctype:
        ctype = "application/octet-stream"
    name = display.safe_filename(display.filename_of(found), found.get_content_type())
    response = send_file(BytesIO(found.get_payload(decode=True) or b""), mimetype=ctype, as_attachment=True,
                         download_name=name, max_age=0)
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return _private(response)


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/source")
@login_required
def source(key, message_id):
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    response = Response(_raw(msg).decode("utf-8", "replace"), mimetype="text/plain")
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    return _private(response)


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/message.eml")
@login_required
def eml(key, message_id):
    space = archive_space(key, VIEW)
    msg = _message(space, message_id)
    response = send_file(BytesIO(_raw(msg)), mimetype="message/rfc822", as_attachment=True,
                         download_name=f"message-{msg.id}.eml", max_age=0)
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    return _private(response)


@bp.route("/spaces/<key>/mail/threads/<int:thread_id>")
@login_required
def thread(key, thread_id):
    space = archive_space(key, VIEW)
    found = db.session.get(Thread, thread_id)
    if found is None or found.space_id != space.id:
        abort(404)
    tree = reading.thread_tree(found)[:500]
    raws = dict(db.session.execute(select(MessageRaw.message_id, MessageRaw.raw).where(  # one query, not one a message
        MessageRaw.message_id.in_([msg.id for msg, _depth in tree]))).all())
    bodies = {}
    for msg, _depth in tree:
        shown = _shown(msg, raws.get(msg.id, b""))
        bodies[msg.id] = display.text_to_html(shown.text) if shown.text is not None else None
    newer, older = reading.adjacent_threads(found)
    seen = reading.last_visit(current_user.id, found)
    new = {m.id for m, _depth in tree if seen is None or m.received_at > seen}
    fold = seen is not None and len(tree) > reading.LONG_THREAD and 0 < len(new) < len(tree)
    page = render_template("archive/thread.html", space=space, thread=found, tree=tree, bodies=bodies, newer=newer,
                           older=older, seen=seen, new=new, fold=fold)
    if db.session.dirty or db.session.new:
        try:
            db.session.commit()
        except IntegrityError:  # the same reader's other tab noted the visit first
            db.session.rollback()
    return _private(Response(page))


@bp.route("/spaces/<key>/mail/export.mbox")
@login_required
def export_mbox(key):
    """The whole archive, a month (?month=2026-01) or a thread (?thread=ID), streamed as mbox."""
    space = archive_space(key, VIEW)
    thread_id = arg_int("thread", None)
    if thread_id is not None:
        found = db.session.get(Thread, thread_id)
        if found is None or found.space_id != space.id:
            abort(404)
    month = request.args.get("month", "")
    month = month if reading.month_bounds(month) else ""
    query = reading.export_query(space.id, thread_id, month)
    name = f"{space.key}{'-thread-' + str(thread_id) if thread_id else ''}{'-' + month if month else ''}.mbox"
    response = Response(stream_with_context(reading.mbox_stream(query)), mimetype="application/mbox")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Content-Security-Policy"] = SANDBOX_CSP
    return _private(response)


def _deleter_space(key):
    space = archive_space(key, VIEW)
    if not trash.may_delete(current_user, space):
        abort(403)
    return space


@bp.route("/spaces/<key>/mail/messages/<int:message_id>/delete", methods=["POST"])
@login_required
def delete_message(key, message_id):
    space = _deleter_space(key)
    trash.move_to_trash([_message(space, message_id)], current_user)
    db.session.commit()
    flash("The message is in the space's trash for 30 days.", "success")
    return redirect(url_for("archive.mail", key=space.key))


@bp.route("/spaces/<key>/mail/threads/<int:thread_id>/delete", methods=["POST"])
@login_required
def delete_thread(key, thread_id):
    space = _deleter_space(key)
    found = db.session.get(Thread, thread_id)
    if found is None or found.space_id != space.id:
        abort(404)
    count = trash.move_to_trash([m for m, _ in reading.thread_tree(found)], current_user)
    db.session.commit()
    flash(f"{count} message{'' if count == 1 else 's'} moved to the space's trash for 30 days.", "success")
    return redirect(url_for("archive.mail", key=space.key, view="threads"))


@bp.route("/spaces/<key>/mail/trash")
@login_required
def trash_page(key):
    space = _deleter_space(key)
    return _private(Response(render_template("archive/trash.html", space=space, messages=trash.in_trash(space.id),
                                             keep_days=trash.KEEP_DAYS)))


@bp.route("/spaces/<key>/mail/trash/<int:message_id>/restore", methods=["POST"])
@login_required
def restore_message(key, message_id):
    space = _deleter_space(key)
    found = db.session.get(Message, message_id)
    if found is None or found.space_id != space.id or found.deleted_at is None:
        abort(404)
    trash.restore(found)
    db.session.commit()
    if is_htmx():
        return partial("_empty.html")
    flash("Restored to the archive.", "success")
    return redirect(url_for("archive.trash_page", key=space.key))


@bp.route("/spaces/<key>/mail/import", methods=["GET", "POST"])
@login_required
def import_mail(key):
    """A space admin uploads an mbox (or .eml files); a worker imports them, deduplicated as fetching is."""
    space = archive_space(key, ADMIN)
    run, error = None, None
    form = ImportForm()
    if form.validate_on_submit():
        try:
            run = importing.start_import(space, form.files.data, current_user)
            db.session.commit()
        except importing.UploadError as exc:
            db.session.rollback()
            error = str(exc)
    elif form.is_submitted():
        error = " ".join(e for errors in form.errors.values() for e in errors)
    if is_htmx() and request.method == "POST":
        return partial("archive/_import_run.html", space=space, run=run, error=error)
    return render_template("archive/import.html", space=space, run=run, error=error, form=form)


@bp.route("/spaces/<key>/mail/import/<int:run_id>")
@login_required
def import_status(key, run_id):
    space = archive_space(key, ADMIN)
    found = db.session.get(JobRun, run_id)
    owned = found is not None and found.kind == "import" and db.session.scalar(
        select(ArchiveImport.id).where(ArchiveImport.job_run_id == found.id, ArchiveImport.space_id == space.id))
    if not owned:
        abort(404)
    return page_or_partial("archive/import.html", "archive/_import_run.html", space=space, run=found, error=None,
                           form=ImportForm())
