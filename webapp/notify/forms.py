"""Email preferences."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField, SubmitField
from wtforms.fields.choices import SelectChoice


class PreferencesForm(FlaskForm):
    notify_own_actions = BooleanField("Notify me of my own changes too (Notify On My Actions)")
    mail_format = RadioField("Mail format", choices=[SelectChoice("html", "HTML (with a plain-text part)"),
                                                     SelectChoice("text", "Plain text only")], default="html")
    daily_report = BooleanField("Send me a daily report of what changed in what I watch")
    watch_own_edits = BooleanField("Watch pages I create or edit")
    submit = SubmitField("Save preferences")
