"""Pages, blog posts, versions, diffs and comments in a space."""
from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.content import bp, services
from webapp.content.forms import CommentForm, PageForm
from webapp.content.models import BLOG, PAGE, Page
from webapp.content.render import diff, markdown
from webapp.extensions import db
from webapp.htmx import is_htmx, partial, switch_response, wanted_on
from webapp.notify.events import pending_edit
from webapp.params import MAX_ID, arg_int
from webapp.settings import format_local
from webapp.spaces.access import can, space_for
from webapp.spaces.models import ADMIN, EDIT, VIEW


def _page(space, page_id: int) -> Page:
    page = db.session.get(Page, page_id)
    if page is None or page.space_id != space.id:
        abort(404)
    return page


@bp.route("/spaces/<key>/pages")
@login_required
def pages(key):
    space = space_for(key, VIEW)
    return render_template("content/pages.html", space=space, pages=services.pages_of(space, PAGE), kind=PAGE,
                           may_edit=can(current_user, space, EDIT))


@bp.route("/spaces/<key>/blog")
@login_required
def blog(key):
    space = space_for(key, VIEW)
    return render_template("content/pages.html", space=space, pages=services.pages_of(space, BLOG), kind=BLOG,
                           may_edit=can(current_user, space, EDIT))


@bp.route("/spaces/<key>/<any(pages, blog):section>/new", methods=["GET", "POST"])
@login_required
def new_page(key, section):
    space = space_for(key, EDIT)
    kind = BLOG if section == "blog" else PAGE
    form = PageForm()
    if form.validate_on_submit():
        page = services.create_page(space, current_user, form.title.data, form.body.data or "", kind)
        db.session.commit()
        flash(f"{'Blog post' if kind == BLOG else 'Page'} “{page.title}” created.", "success")
        return redirect(url_for("content.page", key=space.key, page_id=page.id))
    return render_template("content/edit.html", space=space, form=form, page=None, kind=kind)


@bp.route("/spaces/<key>/pages/<int:page_id>")
@login_required
def page(key, page_id):
    space = space_for(key, VIEW)
    page = _page(space, page_id)
    return render_template("content/page.html", space=space, page=page, html=markdown(page.body),
                           comments=services.comments_of(page), form=CommentForm(),
                           may_edit=can(current_user, space, EDIT), may_admin=can(current_user, space, ADMIN),
                           render=markdown)


@bp.route("/spaces/<key>/pages/<int:page_id>/edit", methods=["GET", "POST"])
@login_required
def edit_page(key, page_id):
    space = space_for(key, EDIT)
    page = _page(space, page_id)
    form = PageForm(obj=page)
    if form.validate_on_submit():
        try:
            changed = services.edit_page(page, current_user, form.title.data, form.body.data or "", form.version.data)
        except services.ContentError as exc:
            db.session.rollback()
            form.body.errors.append(str(exc))
        else:
            db.session.commit()
            waiting = pending_edit(page, current_user) if changed else None
            flash(f"Saved version {page.version}." + (
                f" Watchers will be told at {format_local(waiting.send_after, '%H:%M')}, with any further edits you "
                "make before then." if waiting else "") if changed else "Nothing changed.", "success")
            return redirect(url_for("content.page", key=space.key, page_id=page.id))
    return render_template("content/edit.html", space=space, form=form, page=page, kind=page.kind)


@bp.route("/spaces/<key>/pages/<int:page_id>/history")
@login_required
def history(key, page_id):
    space = space_for(key, VIEW)
    page = _page(space, page_id)
    return render_template("content/history.html", space=space, page=page, versions=services.versions_of(page))


@bp.route("/spaces/<key>/pages/<int:page_id>/diff")
@login_required
def page_diff(key, page_id):
    space = space_for(key, VIEW)
    page = _page(space, page_id)
    new_number = arg_int("to", page.version, -MAX_ID, MAX_ID)
    old_number = arg_int("from", new_number - 1, -MAX_ID, MAX_ID)
    if not (1 <= old_number <= page.version and 1 <= new_number <= page.version):
        abort(404, f"This page has versions 1 to {page.version}.")
    old, new = services.version(page, old_number), services.version(page, new_number)
    if old is None or new is None:
        abort(404, f"This page has versions 1 to {page.version}.")
    return render_template("content/diff.html", space=space, page=page, old=old, new=new,
                           lines=diff(f"# {old.title}\n\n{old.body}", f"# {new.title}\n\n{new.body}"))


@bp.route("/spaces/<key>/pages/<int:page_id>/comments", methods=["POST"])
@login_required
def comment(key, page_id):
    space = space_for(key, VIEW)
    page = _page(space, page_id)
    form = CommentForm()
    if form.validate_on_submit():
        services.add_comment(page, current_user, form.body.data)
        db.session.commit()
        form = CommentForm(formdata=None)
    if not is_htmx():
        for error in form.body.errors:
            flash(error, "error")
        return redirect(url_for("content.page", key=space.key, page_id=page.id) + "#comments")
    return partial("content/_comments.html", space=space, page=page, comments=services.comments_of(page), form=form,
                   render=markdown)


@bp.route("/spaces/<key>/pages/<int:page_id>/sensitive", methods=["POST"])
@login_required
def set_sensitive(key, page_id):
    space = space_for(key, ADMIN)
    page = _page(space, page_id)
    page.sensitive = wanted_on()
    db.session.commit()
    return switch_response(url_for("content.page", key=space.key, page_id=page.id), "content/_sensitive.html",
                           space=space, page=page)
