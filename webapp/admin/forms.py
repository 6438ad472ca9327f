"""System administration forms."""
from zoneinfo import available_timezones

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField, SubmitField, URLField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional, URL, ValidationError

from webapp.auth.forms import NewPasswordFields, PersonFields
from webapp.formtools import no_control_chars, strip

TIME_ZONES = sorted(available_timezones())



def http_url(form, field):
    if field.data and not field.data.startswith(("http://", "https://")):
        raise ValidationError("Start the base URL with https:// (or http:// on a private network).")


class NewUserForm(PersonFields, NewPasswordFields):
    is_admin = BooleanField("System administrator")
    can_create_spaces = BooleanField("May create site spaces")
    submit = SubmitField("Create user")


class SiteSettingsForm(FlaskForm):
    site_title = StringField("Site title", validators=[InputRequired(), Length(max=100), no_control_chars],
                             filters=[strip])
    base_url = URLField(
        "Base URL",
        description="The address people use to reach Spacemail; links in emails start with it.",
        validators=[Optional(), URL(require_tld=False, message="Enter a full URL."), http_url, Length(max=300)],
        filters=[lambda v: v.strip().rstrip("/") if isinstance(v, str) else v],
    )
    time_zone = SelectField("Time zone", choices=[SelectChoice(z) for z in TIME_ZONES], default="UTC")
    notify_coalesce_minutes = IntegerField(
        "Combine one person's edits to a page within (minutes)", default=10,
        description="Their notification waits this long and then covers every edit; 0 sends each edit at once.",
        validators=[InputRequired(message="Enter a number of minutes."), NumberRange(0, 1440, "Choose 0 to 1440.")])
    space_admins_invite = BooleanField("Space admins may invite people by email to their spaces",
                                       description="System administrators always may; invited people get the role "
                                                   "the invitation names in that space.")
    daily_report_hour = SelectField("Daily report at", choices=[SelectChoice(h, f"{h:02d}:00") for h in range(24)],
                                    coerce=int, default=8, description="In the site's time zone.")
    daily_report_subject = StringField("Daily report subject", default="Your daily report",
                                       description="Left empty, it stays as it is.",
                                       validators=[Optional(), Length(max=200), no_control_chars], filters=[strip])
    submit = SubmitField("Save settings")


class ToggleForm(FlaskForm):
    """An empty form: only the CSRF token, for the in-place switches."""


class InviteForm(FlaskForm):
    email = PersonFields.email
    is_admin = BooleanField("System administrator")
    can_create_spaces = BooleanField("May create site spaces")
    submit = SubmitField("Send invitation")


class EditUserForm(PersonFields):
    submit = SubmitField("Save")
