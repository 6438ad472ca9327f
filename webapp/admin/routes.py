"""System administration: users, apps, general settings, workers."""
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from rq import Worker

from webapp import health
from webapp.admin import bp, services
from webapp.admin.forms import EditUserForm, InviteForm, NewUserForm, SiteSettingsForm, ToggleForm
from webapp.archive.forms import MailArchivingSettingsForm
from webapp.settings import SiteSettings
from webapp.spaces.models import ROLE_LABELS
from webapp.auth.models import User
from webapp.auth import links
from webapp.auth.services import AuthError, create_user, update_person
from webapp.decorators import admin_required
from webapp.extensions import db
from webapp.htmx import is_htmx, page_or_partial, partial, wanted_on
from webapp.jobs import WORKER_CHECK, JobRun, get_queue, redis_connection, start_job
from webapp.notify import fanout, report
from webapp.notify.models import ContentEvent
from webapp.outgoing.servers import default_key
from webapp.timeutil import utcnow

USER_FLAGS = {
    "active": lambda actor, user, on: services.set_active(actor, user, on),
    "admin": lambda actor, user, on: services.set_admin(actor, user, on),
    "create_spaces": lambda actor, user, on: services.set_can_create_spaces(user, on),
}


@bp.route("/")
@admin_required
def index():
    return redirect(url_for("admin.users"))


@bp.route("/users")
@admin_required
def users():
    return _users_page(InviteForm(formdata=None))


def _users_page(invite_form, status=200):
    return render_template("admin/users.html", users=services.list_users(), invite_form=invite_form,
                           invitations=links.pending_invitations(), now=utcnow(), show_space=True,
                           role_labels=ROLE_LABELS,
                           invitation_url=lambda link, action: url_for("admin.invitation_action", link_id=link.id,
                                                                       action=action),
                           no_mail_server=default_key() is None), status


@bp.route("/invitations", methods=["POST"])
@admin_required
def invite():
    form = InviteForm()
    if form.validate_on_submit():
        try:
            links.invite(current_user, form.email.data, is_admin=form.is_admin.data,
                         can_create_spaces=form.can_create_spaces.data)
        except AuthError as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Invitation sent to {form.email.data}: the link works for "
                  f"{current_app.config['INVITATION_DAYS']} days.", "success")
            return redirect(url_for("admin.users") + "#invitations")
    return _users_page(form)


@bp.route("/invitations/<int:link_id>/<any(resend, revoke):action>", methods=["POST"])
@admin_required
def invitation_action(link_id, action):
    link = links.invitation_of(link_id)
    if link is None:
        abort(404)
    if ToggleForm().validate_on_submit():
        message = links.act(link, action, current_user)
        db.session.commit()
        flash(message, "success")
    return redirect(url_for("admin.users") + "#invitations")


@bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_user(user_id):
    user = db.get_or_404(User, user_id)
    form = EditUserForm(obj=user)
    if form.validate_on_submit():
        try:
            update_person(user, form.username.data, form.full_name.data, form.email.data)
        except AuthError as exc:
            db.session.rollback()
            (form.email if "address" in str(exc) else form.username).errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"{user.full_name} saved.", "success")
            return redirect(url_for("admin.users"))
    return render_template("admin/edit_user.html", form=form, user=user, action_form=ToggleForm())


@bp.route("/users/<int:user_id>/send-reset", methods=["POST"])
@admin_required
def send_reset(user_id):
    user = db.get_or_404(User, user_id)
    if ToggleForm().validate_on_submit():
        if not user.active:
            flash(f"{user.full_name}'s account is disabled: enable it first.", "error")
        else:
            links.send_reset(user, by_admin=True)
            db.session.commit()
            flash(f"A link to set a new password is on its way to {user.email} (valid "
                  f"{current_app.config['ADMIN_RESET_HOURS']} hours). Their password works until they use it.",
                  "success")
    return redirect(url_for("admin.edit_user", user_id=user.id))


@bp.route("/users/new", methods=["GET", "POST"])
@admin_required
def new_user():
    form = NewUserForm()
    if form.validate_on_submit():
        try:
            user = create_user(form.username.data, form.email.data, form.full_name.data, form.password.data,
                               is_admin=form.is_admin.data)
        except AuthError as exc:
            db.session.rollback()
            form.username.errors.append(str(exc))
        else:
            user.can_create_spaces = form.can_create_spaces.data
            db.session.commit()
            flash(f"{user.full_name} can now sign in as {user.username}.", "success")
            return redirect(url_for("admin.users"))
    return render_template("admin/new_user.html", form=form)


@bp.route("/users/<int:user_id>/<any(active, admin, create_spaces):flag>", methods=["POST"])
@admin_required
def set_user_flag(user_id, flag):
    user = db.get_or_404(User, user_id)
    error = None
    if ToggleForm().validate_on_submit():
        try:
            USER_FLAGS[flag](current_user, user, wanted_on())
        except services.AdminError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
    if not is_htmx():
        if error:
            flash(error, "error")
        return redirect(url_for("admin.users"))
    return partial("admin/_user_row.html", u=user, error=error)


@bp.route("/users/<int:user_id>/end-sessions", methods=["POST"])
@admin_required
def end_user_sessions(user_id):
    user = db.get_or_404(User, user_id)
    ended = 0
    if ToggleForm().validate_on_submit():
        ended = services.end_sessions(user)
        db.session.commit()
    note = f"{ended} session{'s' if ended != 1 else ''} ended." if ended else "No session was open."
    if not is_htmx():
        flash(f"{user.full_name}: {note}", "success")
        return redirect(url_for("admin.users"))
    return partial("admin/_user_row.html", u=user, note=note)


@bp.route("/apps")
@admin_required
def apps():
    return render_template("admin/apps.html", settings=SiteSettings.get())


@bp.route("/apps/mail-archiving", methods=["POST"])
@admin_required
def toggle_mail_archiving():
    if ToggleForm().validate_on_submit():
        services.set_mail_archiving(wanted_on())
        db.session.commit()
    if not is_htmx():  # a plain form post: redirect, so that a reload does not post again
        return redirect(url_for("admin.apps"), 303)
    return partial("admin/_app_mail_archiving.html", settings=SiteSettings.get())


@bp.route("/mail-archiving", methods=["GET", "POST"])
@admin_required
def mail_archiving():
    settings = SiteSettings.get()
    form = MailArchivingSettingsForm(obj=settings)
    if form.validate_on_submit():
        services.update_mail_archiving(form.mail_host_allowlist.data or "", form.fetch_interval_minutes.data)
        db.session.commit()
        flash("Mail archiving settings saved.", "success")
        return redirect(url_for("admin.mail_archiving"))
    return render_template("admin/mail_archiving.html", form=form, settings=settings)


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings():
    form = SiteSettingsForm(obj=SiteSettings.get())
    if form.validate_on_submit():
        services.update_site_settings(form.site_title.data, form.base_url.data, form.time_zone.data,
                                      form.notify_coalesce_minutes.data, form.daily_report_hour.data,
                                      form.space_admins_invite.data, form.daily_report_subject.data)
        db.session.commit()
        flash("Settings saved.", "success")
        return redirect(url_for("admin.settings"))
    return render_template("admin/settings.html", form=form, report=report.preview(current_user))


@bp.route("/system")
@admin_required
def system():
    connection = redis_connection()
    health.report_host("web")
    checks = health.run_checks()
    return render_template(
        "admin/system.html",
        checks=checks,
        summary=health.summary(checks),
        settings=SiteSettings.get(),
        workers=Worker.all(connection=connection),
        queued=len(get_queue()),
        failed=fanout.failed_events(),
    )


@bp.route("/system/failed-events/<int:event_id>/<any(retry, discard):action>", methods=["POST"])
@admin_required
def failed_event(event_id, action):
    event = db.get_or_404(ContentEvent, event_id)
    if ToggleForm().validate_on_submit() and event.failed_at is not None and event.fanned_out_at is None:
        (fanout.retry_event if action == "retry" else fanout.discard_event)(event)
        db.session.commit()
    if not is_htmx():
        flash("The event is queued again." if action == "retry" else "The event is discarded.", "success")
        return redirect(url_for("admin.system"))
    return partial("_empty.html")


@bp.route("/system/check", methods=["POST"])
@admin_required
def start_worker_check():
    run = start_job("worker-check", WORKER_CHECK, user=current_user)
    db.session.commit()
    if not is_htmx():  # a plain form post: redirect, so that a reload does not start another check
        return redirect(url_for("admin.job_status", run_id=run.id), 303)
    return partial("admin/_job_run.html", run=run)


@bp.route("/jobs/<int:run_id>")
@admin_required
def job_status(run_id):
    run = db.get_or_404(JobRun, run_id)
    return page_or_partial("admin/job_page.html", "admin/_job_run.html", run=run)
