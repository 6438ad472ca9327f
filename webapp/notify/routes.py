"""Watch toggles, email preferences and the Watching list, and the signed one-click unwatch."""
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp.content.models import Page
from webapp.extensions import csrf, db
from webapp.htmx import is_htmx, partial, switch_response, wanted_on
from webapp.decorators import admin_required
from webapp.notify import bp, replies, watches
from webapp.notify.forms import PreferencesForm, ReplyMailboxForm
from webapp.errors import UserError
from webapp.notify.models import BLOG, PAGE, SPACE, Watch
from webapp.oauth.credentials import choices, grant_of
from webapp.oauth.forms import restored_form
from webapp.spaces.access import can, space_for
from webapp.spaces.models import VIEW, Space


def _toggle(scope: str, space, page, back: str):
    watches.set_watching(current_user, wanted_on(), scope, space, page)
    db.session.commit()
    return switch_response(back, "notify/_watch.html", scope=scope, space=space, page=page, target_url=request.path)


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
    """What the reader watches and may still view: a space they lost access to (and its pages' titles, which go
    on changing) is not shown."""
    rows = []
    for w in watches.watches_of(current_user):
        space = db.session.get(Space, w.space_id)
        page = db.session.get(Page, w.page_id) if w.scope == PAGE else None
        if space is None or not can(current_user, space, VIEW):
            continue
        if w.scope == PAGE and (page is None or page.space_id != space.id):
            continue
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
    form = restored_form(ReplyMailboxForm, obj=box) or ReplyMailboxForm(obj=box)
    form.offer_sign_in(choices())
    if form.validate_on_submit():
        try:
            replies.save_mailbox(box, form.enabled.data, form.address.data, form.connection_data(), current_user)
        except UserError as exc:
            db.session.rollback()
            form.password.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Reply by email saved." + (" Replies are fetched every minute." if box.enabled else ""), "success")
            return redirect(url_for("notify.reply_mailbox"))
    form.password.data = ""
    return render_template("notify/replies.html", form=form, box=box, grant=grant_of(box), return_to=url_for("notify.reply_mailbox"))
