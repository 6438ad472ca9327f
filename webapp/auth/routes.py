"""Sign in and out, first-run setup, profile."""
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from webapp.auth import bp
from webapp.auth import services
from webapp.auth.forms import ChangePasswordForm, LoginForm, ProfileForm, SetupForm
from webapp.extensions import db
from webapp.security import safe_next


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("spaces.directory"))
    form = LoginForm()
    if form.validate_on_submit():
        user = services.authenticate(form.login.data, form.password.data)
        if user is None:
            form.password.errors.append("Wrong username or password, or the account is disabled.")
        else:
            db.session.commit()
            login_user(user, remember=form.remember.data)
            return redirect(safe_next(request.args.get("next"), url_for("spaces.directory")))
    return render_template("auth/login.html", form=form, first_run=services.user_count() == 0)


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run only: the link printed by the run command creates the first system administrator."""
    token = request.args.get("token")
    if not services.setup_token_valid(token):
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
            login_user(user)
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
            services.update_profile(current_user, form.full_name.data, form.email.data, form.time_zone.data)
        except services.AuthError as exc:
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Profile saved.", "success")
            return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form, password_form=password_form)


@bp.route("/profile/password", methods=["POST"])
@login_required
def change_password():
    form = ProfileForm(formdata=None, obj=current_user)
    password_form = ChangePasswordForm()
    if password_form.validate_on_submit():
        try:
            services.change_password(current_user, password_form.current.data, password_form.password.data)
        except services.AuthError as exc:
            password_form.current.errors.append(str(exc))
        else:
            db.session.commit()
            login_user(current_user)  # keep this session; the new auth_version signs out the others
            flash("Password changed. Other sessions are signed out.", "success")
            return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form, password_form=password_form)
