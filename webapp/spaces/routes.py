"""Space directory, home, settings and permissions."""
from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp.auth import links
from webapp.auth.forms import ConfirmForm
from webapp.auth.services import AuthError, find_user
from webapp.extensions import db
from webapp.htmx import is_htmx, page_or_partial, partial, switch_response, wanted_on
from webapp.spaces import bp
from webapp.spaces.access import role_in, space_for, visible_spaces
from webapp.settings import SiteSettings
from webapp.spaces.forms import AddRoleForm, ChangeRoleForm, InviteToSpaceForm, NewSpaceForm, SpaceSettingsForm
from webapp.spaces.models import ADMIN, ROLE_LABELS, SpaceRole
from webapp.spaces.services import (SpaceError, create_site_space, grant, revoke, roles_of, suggested_key,
                                     update_space)
from webapp.timeutil import utcnow


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("spaces.directory"))
    return redirect(url_for("auth.login"))


@bp.route("/spaces")
@login_required
def directory():
    return render_template("spaces/directory.html", spaces=visible_spaces(current_user))


@bp.route("/spaces/new", methods=["GET", "POST"])
@login_required
def new_space():
    if not current_user.may_create_spaces:
        abort(403)
    form = NewSpaceForm()
    if form.validate_on_submit():
        try:
            space = create_site_space(current_user, form.key.data or suggested_key(form.name.data), form.name.data,
                                      form.description.data or "")
        except SpaceError as exc:
            form.key.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Space {space.name} created.", "success")
            return redirect(url_for("spaces.home", key=space.key))
    return render_template("spaces/new.html", form=form)


@bp.route("/spaces/<key>")
@login_required
def home(key):
    space = space_for(key)
    return render_template("spaces/home.html", space=space, role=role_in(current_user, space))


@bp.route("/spaces/<key>/settings", methods=["GET", "POST"])
@login_required
def settings(key):
    space = space_for(key, ADMIN)
    form = SpaceSettingsForm(obj=space)
    if form.validate_on_submit():
        update_space(space, form.name.data, form.description.data or "", form.everyone_can_view.data)
        db.session.commit()
        flash("Space settings saved.", "success")
        return redirect(url_for("spaces.settings", key=space.key))
    return render_template("spaces/settings.html", space=space, form=form)


def _permissions(space, add_form=None, status=200, invite_form=None):
    may_invite = _may_invite()
    return page_or_partial(
        "spaces/permissions.html",
        "spaces/_permissions.html",
        status=status,
        space=space,
        roles=roles_of(space),
        add_form=add_form or AddRoleForm(formdata=None),
        role_labels=ROLE_LABELS,
        may_invite=may_invite,
        invite_form=invite_form or InviteToSpaceForm(formdata=None, prefix="invite"),
        invitations=links.pending_invitations(space) if may_invite else [],
        invitation_url=lambda link, action: url_for("spaces.invitation_action", key=space.key, link_id=link.id,
                                                    action=action),
        now=utcnow(),
    )


def _may_invite() -> bool:
    return current_user.is_admin or SiteSettings.get().space_admins_invite


@bp.route("/spaces/<key>/permissions/invite", methods=["POST"])
@login_required
def invite(key):
    space = space_for(key, ADMIN)
    if not _may_invite():
        abort(403)
    form = InviteToSpaceForm(prefix="invite")
    if form.validate_on_submit():
        try:
            links.invite(current_user, form.email.data, space=space, role=form.role.data)
        except AuthError as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Invitation sent to {form.email.data}: once they accept, they have the "
                  f"{ROLE_LABELS[form.role.data]} role here.", "success")
            return redirect(url_for("spaces.permissions", key=space.key) + "#invitations")
    return _permissions(space, invite_form=form)


@bp.route("/spaces/<key>/invitations/<int:link_id>/<any(resend, revoke):action>", methods=["POST"])
@login_required
def invitation_action(key, link_id, action):
    space = space_for(key, ADMIN)
    if not _may_invite():
        abort(403)
    link = links.invitation_of(link_id, space)
    if link is None:
        abort(404)
    if ConfirmForm().validate_on_submit():
        message = links.act(link, action, current_user)
        db.session.commit()
        flash(message, "success")
    return redirect(url_for("spaces.permissions", key=space.key) + "#invitations")


@bp.route("/spaces/<key>/permissions", methods=["GET", "POST"])
@login_required
def permissions(key):
    space = space_for(key, ADMIN)
    form = AddRoleForm()
    if form.validate_on_submit():
        person = find_user(form.person.data)
        if person is None:
            form.person.errors.append("Nobody has that username or email.")
        else:
            try:
                grant(space, person, form.role.data)
            except SpaceError as exc:
                db.session.rollback()
                form.person.errors.append(str(exc))
            else:
                db.session.commit()
                if not is_htmx():
                    flash(f"{person.full_name} now has the {ROLE_LABELS[form.role.data]} role.", "success")
                    return redirect(url_for("spaces.permissions", key=space.key))
                form = None
    return _permissions(space, form)


def _role_or_404(space, role_id) -> SpaceRole:
    space_role = db.session.scalar(select(SpaceRole).where(SpaceRole.id == role_id, SpaceRole.space_id == space.id))
    if space_role is None:
        abort(404)
    return space_role


@bp.route("/spaces/<key>/permissions/<int:role_id>", methods=["POST"])
@login_required
def change_role(key, role_id):
    space = space_for(key, ADMIN)
    space_role = _role_or_404(space, role_id)
    form = ChangeRoleForm()
    error = None
    if form.validate_on_submit():
        try:
            grant(space, space_role.user, form.role.data)
        except SpaceError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
    else:
        error = "Choose View, Edit or Space admin."
    if not is_htmx():
        flash(error or "Role changed.", "error" if error else "success")
        return redirect(url_for("spaces.permissions", key=space.key))
    db.session.refresh(space_role)
    return partial("spaces/_role_row.html", space=space, r=space_role, error=error, role_labels=ROLE_LABELS)


@bp.route("/spaces/<key>/permissions/<int:role_id>/remove", methods=["POST"])
@login_required
def remove_role(key, role_id):
    space = space_for(key, ADMIN)
    space_role = _role_or_404(space, role_id)
    try:
        revoke(space, space_role)
    except SpaceError as exc:
        db.session.rollback()
        if not is_htmx():
            flash(str(exc), "error")
            return redirect(url_for("spaces.permissions", key=space.key))
        return partial("spaces/_role_row.html", space=space, r=space_role, error=str(exc), role_labels=ROLE_LABELS)
    db.session.commit()
    if not is_htmx():
        flash("Removed.", "success")
        return redirect(url_for("spaces.permissions", key=space.key))
    return partial("_empty.html")  # swapping in nothing removes the row


@bp.route("/spaces/<key>/permissions/<int:role_id>/delete-mail", methods=["POST"])
@login_required
def set_delete_mail(key, role_id):
    """The "delete mail" option on top of a role: may move archived mail to the space's trash."""
    space = space_for(key, ADMIN)
    space_role = _role_or_404(space, role_id)
    space_role.can_delete_mail = wanted_on()
    db.session.commit()
    return switch_response(url_for("spaces.permissions", key=space.key), "spaces/_role_row.html", space=space,
                           r=space_role, error=None, role_labels=ROLE_LABELS)
