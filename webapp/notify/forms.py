"""Email preferences."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Email, InputRequired, Length

from webapp.archive.forms import ServiceMailboxForm
from webapp.formtools import strip


class PreferencesForm(FlaskForm):
    notify_own_actions = BooleanField("Notify me of my own changes too (Notify On My Actions)")
    mail_format = RadioField("Mail format", choices=[SelectChoice("html", "HTML (with a plain-text part)"),
                                                     SelectChoice("text", "Plain text only")], default="html")
    daily_report = BooleanField("Send me a daily report of what changed in what I watch")
    watch_own_edits = BooleanField("Watch pages I create or edit")
    submit = SubmitField("Save preferences")


class ReplyMailboxForm(ServiceMailboxForm):
    """Where replies to notifications arrive: the mail account fields, less the archive's own."""

    enabled = BooleanField("Turn replies to notifications into comments")
    address = StringField("Reply address", description="Notifications get Reply-To: this address with a signed "
                          "+tag (replies+r12-34-…@example.org); the mailbox must accept plus-addressed mail.",
                          validators=[InputRequired(), Length(max=254), Email(check_deliverability=False)],
                          filters=[strip])
