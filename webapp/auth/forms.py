"""Sign-in, first-run and profile forms."""
from zoneinfo import available_timezones

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Email, EqualTo, InputRequired, Length, Regexp

from webapp.formtools import no_control_chars, strip

USERNAME_RE = r"^[a-z0-9][a-z0-9._-]{1,62}$"



def _lower(value):
    return value.strip().lower() if isinstance(value, str) else value


class LoginForm(FlaskForm):
    login = StringField("Username or email", validators=[InputRequired(), Length(max=254)], filters=[strip])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=256)])
    remember = BooleanField("Keep me signed in")
    submit = SubmitField("Sign in")


class PersonFields(FlaskForm):
    username = StringField(
        "Username",
        validators=[
            InputRequired(),
            Regexp(USERNAME_RE, message="2-63 characters: lower-case letters, digits, dot, dash, underscore."),
        ],
        filters=[_lower],
    )
    full_name = StringField(
        "Full name", validators=[InputRequired(), Length(max=200), no_control_chars], filters=[strip]
    )
    email = EmailField(
        "Email", validators=[InputRequired(), Email(check_deliverability=False), Length(max=254)], filters=[_lower]
    )


PASSWORD_RULE = "At least 10 characters (up to 256); a few words make a good one."


def new_password_field(label: str = "Password") -> PasswordField:
    return PasswordField(
        label, description=PASSWORD_RULE,
        validators=[InputRequired(), Length(min=10, max=256, message="Use 10 to 256 characters.")]
    )


def confirm_field() -> PasswordField:
    return PasswordField(
        "Repeat password", validators=[InputRequired(), EqualTo("password", message="The passwords differ.")]
    )


class NewPasswordFields(FlaskForm):
    password = new_password_field()
    confirm = confirm_field()


class SetupForm(PersonFields, NewPasswordFields):
    submit = SubmitField("Create administrator")


class ProfileForm(FlaskForm):
    full_name = PersonFields.full_name
    email = PersonFields.email
    time_zone = SelectField("Time zone", default="",
                            choices=[SelectChoice("", "The site's time zone")] + [SelectChoice(z) for z in
                                                                                   sorted(available_timezones())])
    submit = SubmitField("Save profile")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[InputRequired(), Length(max=256)])
    password = new_password_field("New password")
    confirm = confirm_field()
    submit = SubmitField("Change password")


class AcceptInviteForm(NewPasswordFields):
    username = PersonFields.username
    full_name = PersonFields.full_name
    submit = SubmitField("Create my account")


class ForgotPasswordForm(FlaskForm):
    login = StringField("Username or email", validators=[InputRequired(), Length(max=254)], filters=[strip])
    submit = SubmitField("Send me a link")


class ResetPasswordForm(NewPasswordFields):
    password = new_password_field("New password")
    submit = SubmitField("Set password")


class ConfirmForm(FlaskForm):
    """Only the CSRF token: a link's action is a POST, so a mail scanner opening the link changes nothing."""
    submit = SubmitField("Confirm")
