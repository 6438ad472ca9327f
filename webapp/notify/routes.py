"""Watch toggles, email preferences and the Watching list, and the signed one-click unwatch."""
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp.content.models import Page
from webapp.extensions import csrf, db
from webapp.htmx import is_htmx, partial
from webapp.admin.routes import admin_required
from webapp.notify import bp, replies, watches
from webapp.notify.forms import PreferencesForm, ReplyMailboxForm
from webapp.security import secret_box
from webapp.notify.models import BLOG, PAGE, SPACE, Watch
from webapp.spaces.access import space_for
from webapp.spaces.models import VIEW, Space


def _toggle(scope: str, space, page, back: str):
    watches.set_watching(current_user, request.form.get("value") == "on", scope, space, page)
    db.session.commit()
    if not is_htmx():
        return redirect(back)
    target_url = request.path
    return partial("notify/_watch.html", scope=scope, space=space, page=page, target_url=target_url)


@bp.route("/spaces/<key>/watch", methods=["POST"])
@login_required
def watch_space(key):
    space = space_for(key, VIEW)
    return _toggle(SPACE, space, None, url_for("spaces.home", key=space.key))


@bp.route("/spaces/<key>/blog/watch", methods=["POST"])
@login_required
def watch_blog(key):
    space = space_for(key, VIEW)
    return _toggle(BLOG, space, None, url_for("content.blog", key=space.key))


@bp.route("/spaces/<key>/pages/<int:page_id>/watch", methods=["POST"])
@login_required
def watch_page(key, page_id):
    space = space_for(key, VIEW)
    page = db.session.get(Page, page_id)
    if page is None or page.space_id != space.id:
        abort(404)
    return _toggle(PAGE, space, page, url_for("content.page", key=space.key, page_id=page.id))


def _watching_rows() -> list[tuple]:
    rows = []
    for w in watches.watches_of(current_user):
        space = db.session.get(Space, w.space_id)
        page = db.session.get(Page, w.page_id) if w.scope == PAGE else None
        rows.append((w, space, page))
    return rows


@bp.route("/profile/notifications", methods=["GET", "POST"])
@login_required
def preferences():
    form = PreferencesForm(obj=current_user)
    if form.validate_on_submit():
        form.populate_obj(current_user)
        db.session.commit()
        flash("Email preferences saved.", "success")
        return redirect(url_for("notify.preferences"))
    return render_template("notify/preferences.html", form=form, rows=_watching_rows())


@bp.route("/profile/watches/<int:watch_id>/remove", methods=["POST"])
@login_required
def remove_watch(watch_id):
    watch = db.session.scalar(select(Watch).where(Watch.id == watch_id, Watch.user_id == current_user.id))
    if watch is None:
        abort(404)
    db.session.delete(watch)
    db.session.commit()
    if not is_htmx():
        return redirect(url_for("notify.preferences"))
    return partial("_empty.html")


@bp.route("/unwatch/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" with no session; the token is the proof
def unwatch(token):
    values = watches.read_unwatch_token(token)
    if values is None:
        return render_template("notify/unwatch.html", valid=False, done=False), 400
    if request.method == "POST":
        watches.unwatch_by_token(token)
        db.session.commit()
        return render_template("notify/unwatch.html", valid=True, done=True, what=_describe(values))
    return render_template("notify/unwatch.html", valid=True, done=False, what=_describe(values), token=token)


def _describe(values) -> str:
    _user_id, scope, space_id, page_id = values
    space = db.session.get(Space, space_id)
    if space is None:
        return "this"
    if scope == PAGE:
        page = db.session.get(Page, page_id)
        return f"the page “{page.title}”" if page else "this page"
    return f"the blog of {space.name}" if scope == BLOG else f"the space {space.name}"


@bp.route("/admin/mail-servers/replies", methods=["GET", "POST"])
@admin_required
def reply_mailbox():
    box = replies.mailbox()
    form = ReplyMailboxForm(obj=box)
    if form.validate_on_submit():
        changed = (form.protocol.data, form.host.data.lower(), form.port.data, form.username.data) != (
            box.protocol, box.host, box.port, box.username)
        if not form.password.data and (changed or not box.password_encrypted):
            form.password.errors.append("Enter the mailbox password." if not box.password_encrypted else
                                        "You changed where or as whom to sign in: enter the password again.")
        else:
            for name in ("enabled", "address", "protocol", "port", "username", "require_starttls", "folder"):
                setattr(box, name, getattr(form, name).data)
            box.host, box.trusted_ca_pem = form.host.data.lower(), form.trusted_ca_pem.data or None
            if form.password.data:
                box.password_encrypted = secret_box().encrypt(form.password.data)
            db.session.commit()
            flash("Reply by email saved." + (" Replies are fetched every minute." if box.enabled else ""), "success")
            return redirect(url_for("notify.reply_mailbox"))
    form.password.data = ""
    return render_template("notify/replies.html", form=form, box=box)
