"""Administration › Sign-in providers, and "Connect": from a connection form to the provider and back."""
from urllib.parse import urlsplit

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.auth import sessions
from webapp.decorators import admin_required
from webapp.extensions import db
from webapp.htmx import is_htmx
from webapp.mailnet import OAUTH, auth_kind
from webapp.oauth import bp
from webapp.oauth.credentials import grant_of, provider_of
from webapp.oauth.flows import SignInError, finish, start
from webapp.oauth.forms import ProviderForm
from webapp.oauth.models import KINDS, OAuthProvider
from webapp.oauth.notices import broken, count_broken
from webapp.oauth.providers import (
    GOOGLE_SCOPES, MICROSOFT_SCOPES, ProviderSetupError, configured_secret, env_name, in_use, providers, redirect_uri,
    remove_provider, save_provider,
)
from webapp.security import safe_next

# Form fields never kept in a sign-in's draft: secrets and what the draft itself provides.
_NOT_IN_DRAFT = {"csrf_token", "password", "client_secret", "oauth_ticket", "return_to"}


def _provider(provider_id: int) -> OAuthProvider:
    provider = db.session.get(OAuthProvider, provider_id)
    if provider is None:
        abort(404)
    return provider


def _page(form, provider=None):
    return render_template("oauth/provider_form.html", form=form, provider=provider, redirect_uri=redirect_uri(),
                           google_scopes=GOOGLE_SCOPES, microsoft_scopes=MICROSOFT_SCOPES,
                           secret_env=env_name(form.name.data or (provider.name if provider else "NAME")),
                           secret_configured=bool(provider and configured_secret(provider.name) is not None))


@bp.app_template_global("sign_in_grant")
def sign_in_grant(connection):
    """For a connection's row or form: the grant it signs in with (its status, its provider), or None."""
    return grant_of(connection) if connection is not None else None


@bp.app_template_global("reconnects_needed")
def reconnects_needed() -> int:
    """For Administration's tabs: how many connections wait for someone to sign in with their provider again."""
    return count_broken()


@bp.route("/admin/sign-in-providers")
@admin_required
def providers_page():
    rows = providers()
    return render_template("oauth/providers.html", providers=rows, kinds=KINDS, redirect_uri=redirect_uri(),
                           uses={p.id: in_use(p) for p in rows}, broken=broken())


@bp.route("/admin/sign-in-providers/new", methods=["GET", "POST"])
@admin_required
def new_provider():
    form = ProviderForm()
    if form.validate_on_submit():
        try:
            provider = save_provider(form.data_object())
        except ProviderSetupError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Sign-in provider {provider.name} added. Register the redirect URI shown here in its console.",
                  "success")
            return redirect(url_for("oauth.edit_provider", provider_id=provider.id))
    return _page(form)


@bp.route("/admin/sign-in-providers/<int:provider_id>", methods=["GET", "POST"])
@admin_required
def edit_provider(provider_id):
    provider = _provider(provider_id)
    form = ProviderForm(obj=provider)
    if form.validate_on_submit():
        try:
            save_provider(form.data_object(), provider)
        except ProviderSetupError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Sign-in provider {provider.name} saved.", "success")
            return redirect(url_for("oauth.providers_page"))
    form.client_secret.data = ""  # never rendered back
    return _page(form, provider)


@bp.route("/admin/sign-in-providers/<int:provider_id>/remove", methods=["POST"])
@admin_required
def remove(provider_id):
    provider = _provider(provider_id)
    try:
        remove_provider(provider)
    except ProviderSetupError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash("Sign-in provider removed.", "success")
    return redirect(url_for("oauth.providers_page"))


def _return_path(value: str) -> str:
    """The connection form to come back to: a path of this site, without its query (the ticket is added)."""
    path = safe_next(value, "")
    return urlsplit(path).path if path else ""


@bp.route("/oauth/connect", methods=["POST"])
@login_required
def connect():
    """Start a sign-in from a connection form: its values are kept (never a password) and the browser goes to
    the provider. htmx follows HX-Redirect; without JavaScript a page links there (a form cannot be redirected
    to another site under this site's Content-Security-Policy)."""
    back = _return_path(request.form.get("return_to", ""))
    provider = provider_of(request.form.get("auth_method", ""))
    if not back or provider is None or auth_kind(request.form.get("auth_method")) != OAUTH:
        abort(400, "Choose “Sign in with …” as the Authentication first.")
    draft = {k: v for k, v in request.form.items() if k not in _NOT_IN_DRAFT and len(v) <= 20000}
    session_row = sessions.current()
    url = start(provider, current_user, session_row.id if session_row else None, back, draft)
    db.session.commit()
    if is_htmx():
        response = make_response("", 204)
        response.headers["HX-Redirect"] = url
        return response
    return render_template("oauth/continue.html", provider=provider, url=url)


@bp.route("/oauth/callback")
@login_required
def callback():
    """The provider sends the person back here: finish the sign-in and return to the form it started from."""
    session_row = sessions.current()
    try:
        flow = finish(request.args, current_user, session_row.id if session_row else None)
    except SignInError as exc:
        db.session.rollback()
        return render_template("oauth/sign_in_failed.html", message=str(exc)), 400
    db.session.commit()
    return redirect(f"{flow.return_to}?oauth={flow.ticket}")

