"""Sign in and out, first-run setup, profile, and the sessions a person has open."""
from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from webapp.auth import bp, feed_tokens, links, services, sessions
from webapp.auth.forms import ChangePasswordForm, ConfirmForm, LoginForm, ProfileForm, SetupForm
from webapp.auth.models import UserSession
from webapp.auth.throttle import Throttle, refusal
from webapp.extensions import db
from webapp.htmx import is_htmx, partial
from webapp.security import safe_next


def sign_in(user, remember: bool = False) -> None:
    """A fresh session for `user`: a new server-side row, a new cookie and a new CSRF token (no fixation)."""
    session.clear()
    sessions.start(user, remember)
    db.session.commit()
    login_user(user, remember=remember)


def sign_out() -> None:
    row = sessions.current()
    if row is not None:
        sessions.end(row)
        db.session.commit()
    session.clear()
    logout_user()  # after the clear: it leaves the note that deletes the remember cookie


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("spaces.directory"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        throttle = Throttle("login", form.login.data)
        wait = throttle.wait_seconds()
        if wait:
            form.password.errors.append(refusal(wait))
            status = 429
        else:
            user = services.authenticate(form.login.data, form.password.data)
            if user is None:
                throttle.failed()
                throttle.slow_down()
                form.password.errors.append("Wrong username or password, or the account is disabled.")
            else:
                sign_in(user, remember=form.remember.data)
                return redirect(safe_next(request.args.get("next"), url_for("spaces.directory")))
    return render_template("auth/login.html", form=form, first_run=services.user_count() == 0), status


@bp.route("/logout", methods=["POST"])
def logout():
    sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run only: the link printed by the run command creates the first system administrator."""
    token = request.args.get("token")
    throttle = Throttle("setup")
    wait = throttle.wait_seconds()
    if wait:
        abort(429, refusal(wait))
    if not services.setup_token_valid(token):
        throttle.failed()
        abort(404)
    form = SetupForm()
    if form.validate_on_submit():
        try:
            user = services.create_first_admin(
                token, form.username.data, form.email.data, form.full_name.data, form.password.data
            )
        except services.AuthError as exc:
            db.session.rollback()
            form.username.errors.append(str(exc))
        else:
            db.session.commit()
            sign_in(user)
            flash("Welcome! You are the system administrator. Create a space to get started.", "success")
            return redirect(url_for("spaces.directory"))
    return render_template("auth/setup.html", form=form, token=token)


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile():
    form = ProfileForm(obj=current_user)
    password_form = ChangePasswordForm(formdata=None)
    if form.validate_on_submit():
        try:
            changed = form.email.data != current_user.email
            if changed:
                links.request_email_change(current_user, form.email.data)
            services.update_profile(current_user, form.full_name.data, form.time_zone.data)
        except services.AuthError as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Profile saved. We sent a link to {form.email.data}: your address changes when you open it."
                  if changed else "Profile saved.", "success")
            return redirect(url_for("auth.profile"))
    return _profile_page(form, password_form)


def _profile_page(form, password_form, status=200):
    return render_template("auth/profile.html", form=form, password_form=password_form,
                           pending_email=links.pending_email(current_user),
                           sessions=sessions.sessions_of(current_user), this=sessions.current()), status


@bp.route("/profile/feed-token/reset", methods=["POST"])
@login_required
def reset_feed_token():
    if ConfirmForm().validate_on_submit():
        feed_tokens.reset(current_user)
        db.session.commit()
        flash("Your feed token is new: feed readers need the new links from the Mail tabs.", "success")
    return redirect(url_for("auth.profile") + "#feeds")


@bp.route("/profile/email/cancel", methods=["POST"])
@login_required
def cancel_email_change():
    if ConfirmForm().validate_on_submit():
        links.cancel_email_change(current_user)
        db.session.commit()
        flash("The change of address is cancelled: the link sent to the new address no longer works.", "info")
    return redirect(url_for("auth.profile"))


@bp.route("/profile/password", methods=["POST"])
@login_required
def change_password():
    form = ProfileForm(formdata=None, obj=current_user)
    password_form = ChangePasswordForm()
    status = 200
    if password_form.validate_on_submit():
        throttle = Throttle("password", str(current_user.id))
        wait = throttle.wait_seconds()
        try:
            if wait:
                status = 429
                raise services.AuthError(refusal(wait))
            services.change_password(current_user, password_form.current.data, password_form.password.data)
        except services.AuthError as exc:
            if not wait:
                throttle.failed()
            password_form.current.errors.append(str(exc))
        else:
            ended = sessions.end_all(current_user, keep=sessions.current())
            db.session.commit()
            flash("Password changed." + (f" {ended} other session{'s' if ended != 1 else ''} signed out."
                                         if ended else ""), "success")
            return redirect(url_for("auth.profile"))
    return _profile_page(form, password_form, status)


@bp.route("/profile/sessions/<int:session_id>/end", methods=["POST"])
@login_required
def end_session(session_id):
    row = db.session.scalar(select(UserSession).where(UserSession.id == session_id,
                                                      UserSession.user_id == current_user.id))
    if row is None:
        abort(404)
    if row is sessions.current():
        sign_out()
        return _to_login("You are signed out.")
    sessions.end(row)
    db.session.commit()
    if is_htmx():
        return partial("_empty.html")
    flash("That session is signed out.", "success")
    return redirect(url_for("auth.profile") + "#sessions")


@bp.route("/profile/sessions/end-all", methods=["POST"])
@login_required
def end_all_sessions():
    sessions.end_all(current_user)
    db.session.commit()
    session.clear()
    logout_user()
    return _to_login("You are signed out everywhere, this browser too.")


def _to_login(message: str):
    flash(message, "info")
    target = url_for("auth.login")
    if is_htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


@bp.route("/profile/mail-bounced/try-again", methods=["POST"])
@login_required
def try_again():
    """The person whose mail bounced fixed their mailbox: mail to them goes out again (the banner's button)."""
    from webapp.outgoing import bounces

    if not ConfirmForm().validate_on_submit():
        abort(400)
    if bounces.suppression_of(current_user.email) is not None:
        bounces.lift(current_user.email)
        db.session.commit()
        flash(f"Mail to {current_user.email} will be sent again. If it bounces again, this page will say so.",
              "success")
    return redirect(safe_next(request.form.get("next"), url_for("auth.profile")))
