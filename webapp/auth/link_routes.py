"""The pages behind mailed links: accept an invitation, forgot password and reset, confirm a new address.

A link's secret rides in the query string (`?token=`), which the access log leaves out (the Procfile logs the path
only), and leaves the address bar at once: the first GET keeps it in the session and redirects to the same page
without it, so it is not in the browser history, a Referer, or a proxy's log of later requests.
"""
from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from webapp.auth import bp, links
from webapp.auth.forms import AcceptInviteForm, ConfirmForm, ForgotPasswordForm, ResetPasswordForm
from webapp.auth.models import EMAIL, INVITE, RESET, User
from webapp.auth.routes import sign_in
from webapp.auth.services import AuthError
from webapp.auth.throttle import Throttle, refusal
from webapp.extensions import db

DEAD = {
    INVITE: ("This invitation cannot be used", "The link has expired, was used already, or was withdrawn. Ask "
             "whoever invited you to send it again."),
    RESET: ("This link cannot be used", "Links to set a new password work once and for a short time. Ask for a "
            "new one with \"Forgot password?\" on the sign-in page."),
    EMAIL: ("This link cannot be used", "The link has expired, was used already, or a newer change was asked for. "
            "Change your address again in your profile."),
}
PAGES = {INVITE: "auth.accept_invitation", RESET: "auth.reset_password", EMAIL: "auth.confirm_email"}


def _stash(kind: str, token: str):
    throttle = Throttle("link")
    wait = throttle.wait_seconds()
    if wait:
        return _dead(kind, refusal(wait), 429)
    if links.live(kind, token) is None:
        throttle.failed()
        return _dead(kind)
    session[f"link_{kind}"] = token
    return redirect(url_for(PAGES[kind]))


def _stashed(kind: str):
    return links.live(kind, session.get(f"link_{kind}"))


def _opened(kind: str):
    """(the live link this browser holds, None), or (None, the answer to send instead): on the first visit from
    the mail (`?token=`) the secret goes into the session and the bare page follows; a dead link says why."""
    if "token" in request.args and request.method == "GET":
        return None, _stash(kind, request.args["token"])
    link = _stashed(kind)
    return (link, None) if link is not None else (None, _dead(kind))


def _dead(kind: str, text: str | None = None, status: int = 410):
    title, default = DEAD[kind]
    return render_template("error.html", code=status, title=title, text=text or default), status


@bp.route("/invite", methods=["GET", "POST"])
def accept_invitation():
    link, answer = _opened(INVITE)
    if answer is not None:
        return answer
    form = AcceptInviteForm()
    if not form.is_submitted():
        form.username.data = links.suggested_username(link.email)
    if form.validate_on_submit():
        try:
            user = links.accept(link, form.username.data, form.full_name.data, form.password.data)
        except AuthError as exc:
            db.session.rollback()
            form.username.errors.append(str(exc))
        else:
            db.session.commit()
            sign_in(user)
            flash(f"Welcome, {user.full_name}! You sign in as {user.username} or {user.email}.", "success")
            return redirect(_landing(link))
    return render_template("auth/accept_invite.html", form=form, link=link)


def _landing(link) -> str:
    from webapp.spaces.models import Space

    space = db.session.get(Space, link.space_id) if link.space_id else None
    return url_for("spaces.home", key=space.key) if space is not None else url_for("spaces.directory")


@bp.route("/login/forgot", methods=["GET", "POST"])
def forgot_password():
    form = ForgotPasswordForm()
    status, sent = 200, False
    if form.validate_on_submit():
        throttle = Throttle("reset", form.login.data)
        wait = throttle.wait_seconds()
        if wait:
            form.login.errors.append(refusal(wait))
            status = 429
        else:
            throttle.failed()  # every request counts: nobody mails an address over and over through this form
            links.request_reset(form.login.data)
            db.session.commit()
            sent = True
    return render_template("auth/forgot.html", form=form, sent=sent, login=form.login.data), status


@bp.route("/login/reset", methods=["GET", "POST"])
def reset_password():
    link, answer = _opened(RESET)
    if answer is not None:
        return answer
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            user = links.reset_password(link, form.password.data)
        except AuthError as exc:
            db.session.rollback()
            return _dead(RESET, str(exc))
        db.session.commit()
        sign_in(user)
        flash("Your new password is set. Every other session of yours is signed out.", "success")
        return redirect(url_for("spaces.directory"))
    return render_template("auth/reset.html", form=form, link=link)


@bp.route("/profile/email", methods=["GET", "POST"])
def confirm_email():
    link, answer = _opened(EMAIL)
    if answer is not None:
        return answer
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            user = links.confirm_email(link)
        except AuthError as exc:
            db.session.rollback()
            return _dead(EMAIL, str(exc))
        db.session.commit()
        session.pop(f"link_{EMAIL}", None)
        flash(f"Your address is now {user.email}.", "success")
        return redirect(url_for("auth.profile" if current_user.is_authenticated else "auth.login"))
    return render_template("auth/confirm_email.html", form=form, link=link, user=db.session.get(User, link.user_id))
