"""System admin › Mail servers and Mail queue."""
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webapp.decorators import admin_required
from webapp.extensions import db
from webapp.htmx import is_htmx, page_or_partial, partial
from webapp.jobs import JobRun
from webapp.oauth.credentials import choices, grant_of
from webapp.oauth.forms import restored_form
from webapp.outgoing import bp, compose, queue, servers, stats
from webapp.outgoing.forms import ActionForm, RetryScheduleForm, SelectionForm, ServerForm, TestEmailForm
from webapp.outgoing.models import DEFAULT_PORTS, FAILED, QUEUED, SENDING, OutboundMail, SmtpServer, SmtpTest
from webapp.outgoing.testing import start_test
from webapp.params import MAX_ID, page_number
from webapp.settings import SiteSettings


def _server(server_id: int) -> SmtpServer:
    return db.get_or_404(SmtpServer, server_id)


def _list_context() -> dict:
    rows = servers.servers()
    configured, problem = None, servers.configuration_problem()
    if problem is None:
        configured = servers.configured_profile()
    keys = [s.key for s in rows] + ([servers.CONFIG_KEY] if configured else [])
    return {"servers": rows, "configured": configured, "config_problem": problem,
            "default_key": servers.default_key(rows), "tests": servers.last_tests(keys)}


@bp.route("/mail-servers")
@admin_required
def mail_servers():
    return page_or_partial("outgoing/servers.html", "outgoing/_server_list.html", **_list_context())


@bp.route("/mail-servers/<key>/default", methods=["POST"])
@admin_required
def make_default(key):
    _profile_or_404(key)
    if ActionForm().validate_on_submit():
        servers.set_default(key)
        db.session.commit()
    if not is_htmx():
        return redirect(url_for("outgoing.mail_servers"))
    return partial("outgoing/_server_list.html", **_list_context())


def _form_page(form, server=None):
    preview = _preview(form.from_name.data, form.from_address.data)
    back = url_for("outgoing.edit_server", server_id=server.id) if server else url_for("outgoing.new_server")
    return render_template("outgoing/server_form.html", form=form, server=server, preview=preview,
                           default_ports=DEFAULT_PORTS, grant=grant_of(server) if server else None, return_to=back)


def _preview(template: str | None, address: str | None) -> dict:
    """The From header as the signed-in admin's own mail would carry it, and as the site's own mail would."""
    address = compose.clean_header_text(address or "address@example.org", 254)
    site_name = SiteSettings.get().site_title
    return {"person": f"{compose.from_name_for(template or '', current_user, site_name, address)} <{address}>",
            "site": f"{compose.from_name_for(template or '', None, site_name, address)} <{address}>",
            "unknown": compose.unknown_variables(template or "")}


@bp.route("/mail-servers/new", methods=["GET", "POST"])
@admin_required
def new_server():
    form = restored_form(ServerForm)
    if form is None:
        form = ServerForm()
        if request.method == "GET":
            form.port.data = DEFAULT_PORTS[form.security.data]
    form.offer_sign_in(choices())
    if form.validate_on_submit():
        try:
            server = servers.create_server(form.data_object(), current_user)
        except servers.OutgoingError as exc:
            db.session.rollback()
            form.password.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Mail server {server.name} added. Send a test email to check it.", "success")
            return redirect(url_for("outgoing.mail_servers"))
    return _form_page(form)


@bp.route("/mail-servers/<int:server_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_server(server_id):
    server = _server(server_id)
    form = restored_form(ServerForm, obj=server) or ServerForm(obj=server)
    form.offer_sign_in(choices())
    form.submit.label.text = "Save"
    if form.validate_on_submit():
        try:
            servers.update_server(server, form.data_object(), current_user)
        except servers.OutgoingError as exc:
            db.session.rollback()
            form.password.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Mail server {server.name} saved.", "success")
            return redirect(url_for("outgoing.mail_servers"))
    form.password.data = ""  # never rendered back
    return _form_page(form, server)


@bp.route("/mail-servers/<int:server_id>/remove", methods=["GET", "POST"])
@admin_required
def remove_server(server_id):
    server = _server(server_id)
    form = ActionForm()
    if form.validate_on_submit():
        name = server.name
        servers.remove_server(server)
        db.session.commit()
        flash(f"Mail server {name} removed.", "success")
        return redirect(url_for("outgoing.mail_servers"))
    return render_template("outgoing/remove_server.html", server=server, form=form)


@bp.route("/mail-servers/security-fields")
@admin_required
def security_fields():
    """The port follows the security choice (25/587/465) unless the admin typed their own."""
    form = ServerForm(formdata=request.args, meta={"csrf": False})
    security = form.security.data if form.security.data in DEFAULT_PORTS else "starttls"
    if form.port.data in (None, *DEFAULT_PORTS.values()):
        form.port.data = DEFAULT_PORTS[security]
        form.port.raw_data = [str(form.port.data)]
    form.port.errors = []
    return partial("outgoing/_security_fields.html", form=form)


@bp.route("/mail-servers/preview")
@admin_required
def from_preview():
    return partial("outgoing/_from_preview.html",
                   preview=_preview(request.args.get("from_name", ""), request.args.get("from_address", "")))


def _profile_or_404(key: str):
    profile = servers.profile_for(key) if key == servers.CONFIG_KEY or key.isdigit() else None
    if profile is None:
        abort(404)
    return profile


@bp.route("/mail-servers/<key>/test", methods=["GET", "POST"])
@admin_required
def test_email(key):
    profile = _profile_or_404(key)
    form = TestEmailForm()
    if request.method == "GET":
        form.to.data = current_user.email
    test, error = None, None
    if form.validate_on_submit():
        try:
            test = start_test(key, form.to.data, form.subject.data, form.body.data, current_user,
                              via_queue=form.how.data == "queue")
        except servers.OutgoingError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
    elif request.method == "POST":
        error = "Correct the fields marked below, then send again."
    if request.method == "POST" and is_htmx():
        return partial("outgoing/_test_result.html", test=test, error=error, **_test_state(test))
    return render_template("outgoing/test_email.html", profile=profile, form=form, test=test, error=error,
                           **_test_state(test))


def _test_state(test: SmtpTest | None) -> dict:
    if test is None:
        return {"run": None, "mail": None}
    run = db.session.get(JobRun, test.job_run_id) if test.job_run_id else None
    mail = db.session.get(OutboundMail, test.mail_id) if test.mail_id else None
    return {"run": run, "mail": mail}


@bp.route("/mail-servers/tests/<int:test_id>")
@admin_required
def test_status(test_id):
    test = db.get_or_404(SmtpTest, test_id)
    profile = _profile_or_404(test.server_key)
    return page_or_partial("outgoing/test_email.html", "outgoing/_test_result.html", test=test, error=None,
                           profile=profile, form=TestEmailForm(), **_test_state(test))


def _queue_context() -> dict:
    page, errors_page = page_number("page"), page_number("errors_page")
    queued, more = queue.page_of((QUEUED, SENDING), page, (OutboundMail.next_attempt_at, OutboundMail.id))
    failed, more_failed = queue.page_of((FAILED,), errors_page, (OutboundMail.failed_at.desc(), OutboundMail.id))
    return {"health": queue.health(), "queued": queued, "queue_page": page, "more": more, "failed": failed,
            "errors_page": errors_page, "more_failed": more_failed, "recent": queue.recently_sent(),
            "no_server": not servers.ordered_profiles(), "busy": queue.due_count() > 0 or any(
                m.state == SENDING for m in queued)}


@bp.route("/mail-queue")
@admin_required
def mail_queue():
    form = RetryScheduleForm(obj=SiteSettings.get())
    return page_or_partial("outgoing/queue.html", "outgoing/_queue.html", retry_form=form, chart=stats.last_days(),
                           series=stats.SERIES, **_queue_context())


@bp.route("/mail-queue/flush", methods=["POST"])
@admin_required
def flush_queue():
    notice = None
    if ActionForm().validate_on_submit():
        count = queue.flush()
        db.session.commit()
        notice = (f"Sending {count:,} queued mail{'' if count == 1 else 's'} now; this list follows as they go."
                  if count else "The mail queue is empty: nothing to send.")
        if not is_htmx():
            flash(notice, "success")
    if not is_htmx():
        return redirect(url_for("outgoing.mail_queue"))
    return partial("outgoing/_queue.html", notice=notice, **_queue_context())


@bp.route("/mail-queue/errors", methods=["POST"])
@admin_required
def error_queue_action():
    form = SelectionForm()
    ids = [int(i) for i in (request.args.getlist("ids") or request.form.getlist("ids"))
           if i.isdigit() and int(i) <= MAX_ID]
    message = "Tick the mail to resend or delete first."
    if form.validate_on_submit() and ids:
        if form.action.data == "resend":
            count = queue.resend(ids)
            message = f"{count} mail queued again."
        else:
            count = queue.delete_failed(ids)
            message = f"{count} mail deleted from the error queue."
        db.session.commit()
    if not is_htmx():
        flash(message, "success")
        return redirect(url_for("outgoing.mail_queue"))
    return partial("outgoing/_queue.html", notice=message, **_queue_context())


@bp.route("/mail-queue/settings", methods=["POST"])
@admin_required
def retry_settings():
    form = RetryScheduleForm()
    if form.validate_on_submit():
        SiteSettings.get().mail_retry_minutes = form.mail_retry_minutes.data
        db.session.commit()
        flash("Retry schedule saved.", "success")
        return redirect(url_for("outgoing.mail_queue"))
    return render_template("outgoing/queue.html", retry_form=form, chart=stats.last_days(), series=stats.SERIES,
                           **_queue_context())
