"""Administration › Mail servers › Bounces and DKIM, and a person's own Try again after their mail bounced."""
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from webapp.decorators import admin_required
from webapp.errors import UserError
from webapp.extensions import db
from webapp.oauth.credentials import choices, grant_of
from webapp.oauth.forms import restored_form
from webapp.outgoing import bounces, bp, signing
from webapp.outgoing.bounce_forms import BounceMailboxForm
from webapp.outgoing.forms import ActionForm, DkimForm
from webapp.outgoing.models import HARD, SOFT, Bounce, DkimKey, Suppression
from webapp.params import MAX_ID

LISTED = 50


def _bounce_page(form):
    box = bounces.mailbox()
    suppressed = list(db.session.scalars(select(Suppression).order_by(Suppression.created_at.desc()).limit(200)))
    kept = list(db.session.scalars(select(Bounce).where(Bounce.outcome.not_in((HARD, SOFT, "auto_reply")))
                                   .order_by(Bounce.received_at.desc()).limit(LISTED)))
    recent = list(db.session.scalars(select(Bounce).where(Bounce.outcome.in_((HARD, SOFT)))
                                     .order_by(Bounce.received_at.desc()).limit(LISTED)))
    return render_template("outgoing/bounces.html", form=form, box=box, grant=grant_of(box), suppressed=suppressed,
                           kept=kept, recent=recent, action_form=ActionForm(),
                           return_to=url_for("outgoing.bounce_settings"))


@bp.route("/mail-servers/bounces", methods=["GET", "POST"])
@admin_required
def bounce_settings():
    box = bounces.mailbox()
    form = restored_form(BounceMailboxForm, obj=box) or BounceMailboxForm(obj=box)
    form.offer_sign_in(choices())
    if form.validate_on_submit():
        try:
            bounces.save_mailbox(box, form.enabled.data, form.address.data, form.threshold.data,
                                 form.expire_days.data, form.connection_data(), current_user)
        except UserError as exc:
            db.session.rollback()
            form.password.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Bounces saved." + (" The bounce mailbox is read every minute." if box.enabled else ""), "success")
            return redirect(url_for("outgoing.bounce_settings"))
    form.password.data = ""
    return _bounce_page(form)


@bp.route("/mail-servers/bounces/remove", methods=["POST"])
@admin_required
def remove_suppression():
    address = (request.form.get("address") or "").strip().lower()[:254]
    if ActionForm().validate_on_submit() and db.session.get(Suppression, address) is not None:
        released = bounces.lift(address)
        db.session.commit()
        flash(f"{address} receives mail again" + (f"; {released} held mail{'' if released == 1 else 's'} "
                                                   "queued." if released else "."), "success")
    return redirect(url_for("outgoing.bounce_settings"))


@bp.route("/mail-servers/bounces/<int(max=%d):bounce_id>" % MAX_ID)
@admin_required
def bounce_message(bounce_id):
    """A kept bounce as text: never rendered as mail (it is untrusted), only shown escaped."""
    bounce = db.get_or_404(Bounce, bounce_id)
    text = (bounce.raw or b"").decode("utf-8", "replace")
    return render_template("outgoing/bounce_message.html", bounce=bounce, text=text)


@bp.route("/mail-servers/dkim", methods=["GET", "POST"])
@admin_required
def dkim_keys():
    form = DkimForm()
    if form.validate_on_submit():
        try:
            key = signing.generate(form.domain.data, form.selector.data)
        except UserError as exc:
            db.session.rollback()
            form.domain.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"A new key signs mail from {key.domain}. Publish its DNS record below.", "success")
            return redirect(url_for("outgoing.dkim_keys"))
    keys = signing.keys()
    return render_template("outgoing/dkim.html", form=form, keys=keys, records={k.id: signing.record_for(k)
                                                                                for k in keys},
                           action_form=ActionForm())


@bp.route("/mail-servers/dkim/<int(max=%d):key_id>/<any(enable, disable, remove):action>" % MAX_ID,
          methods=["POST"])
@admin_required
def dkim_key_action(key_id, action):
    key = db.get_or_404(DkimKey, key_id)
    if ActionForm().validate_on_submit():
        if action == "remove":
            db.session.delete(key)
        else:
            key.enabled = action == "enable"
        db.session.commit()
        flash(f"Mail from {key.domain} is " + ("signed." if action == "enable" else "no longer signed."), "success")
    return redirect(url_for("outgoing.dkim_keys"))
