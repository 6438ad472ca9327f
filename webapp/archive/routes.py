"""Mail accounts (space admins), Test Connection, the Mail tab and Fetch new mail."""
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.archive import bp, services
from webapp.archive.forms import AccountForm
from webapp.archive.models import DEFAULT_PORTS, RUN_ACTIVE, MailAccount
from webapp.extensions import db, limiter
from webapp.htmx import is_htmx, page_or_partial, partial, switch_response, wanted_on
from webapp.jobs import JobRun
from webapp.oauth.credentials import choices, grant_of
from webapp.oauth.forms import restored_form
from webapp.params import form_id
from webapp.spaces.access import space_for
from webapp.spaces.models import ADMIN


def archive_space(key: str, role: str):
    """The space, if mail archiving is on (else 404), the user holds `role` (else 403) and it is a site space."""
    if not services.archiving_enabled():
        abort(404, "Mail archiving is switched off on this site, so mail archives are not shown (nothing was "
                   "deleted). A system administrator can switch it on again in Administration › Manage apps.")
    space = space_for(key, role)
    if space.is_personal:
        abort(403, "A personal space cannot hold a mail archive.")
    return space


def _account(space, account_id) -> MailAccount:
    account = db.session.get(MailAccount, account_id)
    if account is None or account.space_id != space.id:
        abort(404)
    return account


def _rows(space, accounts=None):
    accounts = accounts if accounts is not None else services.accounts_of(space)
    return {"space": space, "accounts": accounts, "runs": services.latest_runs(accounts)}


@bp.route("/spaces/<key>/mail-accounts")
@login_required
def accounts(key):
    space = archive_space(key, ADMIN)
    return render_template("archive/accounts.html", **_rows(space))


def _account_form_page(space, form, account=None):
    back = (url_for("archive.edit_account", key=space.key, account_id=account.id) if account
            else url_for("archive.new_account", key=space.key))
    return render_template("archive/account_form.html", space=space, form=form, account=account,
                           default_ports=DEFAULT_PORTS, grant=grant_of(account) if account else None, return_to=back)


@bp.route("/spaces/<key>/mail-accounts/new", methods=["GET", "POST"])
@login_required
def new_account(key):
    space = archive_space(key, ADMIN)
    form = restored_form(AccountForm)
    if form is None:
        form = AccountForm()
        if request.method == "GET":
            form.port.data = DEFAULT_PORTS[form.protocol.data]
    form.offer_sign_in(choices())
    if form.validate_on_submit():
        try:
            account = services.create_account(space, form.data_object(), current_user)
        except services.ArchiveError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Mail account {account.name} created. It is fetched every few minutes, or now with Fetch new mail.",
                  "success")
            return redirect(url_for("archive.accounts", key=space.key))
    return _account_form_page(space, form)


@bp.route("/spaces/<key>/mail-accounts/<int:account_id>/edit", methods=["GET", "POST"])
@login_required
def edit_account(key, account_id):
    space = archive_space(key, ADMIN)
    account = _account(space, account_id)
    form = restored_form(AccountForm, obj=account) or AccountForm(obj=account)
    form.offer_sign_in(choices())
    form.submit.label.text = "Save"
    if form.validate_on_submit():
        try:
            services.update_account(account, form.data_object(), current_user)
        except services.ArchiveError as exc:
            db.session.rollback()
            form.password.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Mail account {account.name} saved.", "success")
            return redirect(url_for("archive.accounts", key=space.key))
    form.password.data = ""  # never rendered back
    return _account_form_page(space, form, account)


@bp.route("/spaces/<key>/mail-accounts/<int:account_id>/remove", methods=["GET", "POST"])
@login_required
def remove_account(key, account_id):
    space = archive_space(key, ADMIN)
    account = _account(space, account_id)
    if request.method == "POST":
        name = account.name
        services.remove_account(account)
        db.session.commit()
        flash(f"Mail account {name} removed. The mail it archived stays in the space.", "success")
        return redirect(url_for("archive.accounts", key=space.key))
    return render_template("archive/remove_account.html", space=space, account=account)


@bp.route("/spaces/<key>/mail-accounts/<int:account_id>/enabled", methods=["POST"])
@login_required
def toggle_account(key, account_id):
    space = archive_space(key, ADMIN)
    account = _account(space, account_id)
    services.set_enabled(account, wanted_on())
    db.session.commit()
    return switch_response(url_for("archive.accounts", key=space.key), "archive/_account_row.html", a=account,
                           run=services.latest_runs([account]).get(account.id), space=space)


@bp.route("/spaces/<key>/mail-accounts/protocol-fields")
@login_required
def protocol_fields(key):
    """The fields that follow the protocol: the port (unless the admin typed their own), STARTTLS, folder."""
    space = archive_space(key, ADMIN)
    form = AccountForm(formdata=request.args, meta={"csrf": False})
    protocol = form.protocol.data if form.protocol.data in DEFAULT_PORTS else "imaps"
    if form.port.data in (None, *DEFAULT_PORTS.values()):
        form.port.data = DEFAULT_PORTS[protocol]
        form.port.raw_data = [str(form.port.data)]  # the input renders raw_data when there is some
    form.port.errors = []
    return partial("archive/_protocol_fields.html", form=form, space=space)


def _user_key() -> str:
    return f"user:{current_user.id}"


@bp.route("/spaces/<key>/mail-accounts/test", methods=["POST"])
@login_required
@limiter.limit(lambda: current_app.config["TEST_CONNECTION_RATE"], key_func=_user_key,
               error_message="Too many connection tests: wait a minute before testing again.")
def test_connection(key):
    space = archive_space(key, ADMIN)
    account_id = form_id("account_id")
    account = _account(space, account_id) if account_id else None
    form = AccountForm()
    form.offer_sign_in(choices())
    error, run = None, None
    if form.validate_on_submit():
        try:
            run = services.start_connection_test(space, form.data_object(), current_user, account)
            db.session.commit()
        except services.ArchiveError as exc:
            db.session.rollback()
            error = str(exc)
    else:
        error = "Correct the fields marked below, then test again."
    return page_or_partial("archive/test_page.html", "archive/_connection_test.html", space=space, run=run,
                           test=services.connection_test_for(run) if run else None, error=error,
                           form_errors=form.errors)


@bp.route("/spaces/<key>/mail-accounts/tests/<int:run_id>")
@login_required
def test_status(key, run_id):
    space = archive_space(key, ADMIN)
    run = db.session.get(JobRun, run_id)
    test = services.connection_test_for(run) if run else None
    if test is None or test.space_id != space.id or run.created_by_id != current_user.id:
        abort(404)
    return page_or_partial("archive/test_page.html", "archive/_connection_test.html", space=space, run=run,
                           test=test, error=None, form_errors={})


def _fetch_status(space):
    accounts = [a for a in services.accounts_of(space) if a.enabled]
    runs = services.latest_runs(accounts)
    running = any(run.state in RUN_ACTIVE for run in runs.values())
    count = services.message_count(space)
    response = page_or_partial("archive/fetch_page.html", "archive/_fetch_status.html", space=space,
                               accounts=accounts, runs=runs, running=running, count=count)
    known = request.args.get("known", "")
    if known.isdigit() and int(known) != count:
        response.headers["HX-Trigger"] = "mail-arrived"  # the message list on the page fetches itself again
    return response


@bp.route("/spaces/<key>/mail/fetch", methods=["POST"])
@login_required
def fetch_now(key):
    space = archive_space(key, ADMIN)
    services.queue_space_fetch(space)
    db.session.commit()
    if not is_htmx():  # a plain form post: redirect, so that a reload does not fetch again
        return redirect(url_for("archive.mail", key=space.key), 303)
    return _fetch_status(space)


@bp.route("/spaces/<key>/mail/fetch-status")
@login_required
def fetch_status(key):
    space = archive_space(key, ADMIN)
    return _fetch_status(space)
