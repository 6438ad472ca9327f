"""The sign-in provider form (system admins), and the Authentication fields every connection form shares."""
from flask import request
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import HiddenField, PasswordField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from webapp.formtools import HOST_RE, no_control_chars, no_line_breaks, strip
from webapp.oauth.flows import flow_for_ticket
from webapp.oauth.models import GOOGLE, KINDS
from webapp.oauth.providers import ProviderData


def _hosts(form, field):
    for line in (field.data or "").splitlines():
        if line.strip() and not HOST_RE.match(line.strip()):
            raise ValidationError(f"“{line.strip()[:60]}” is not a host name.")


def _addresses(form, field):
    for line in (field.data or "").splitlines():
        entry = line.strip()
        if entry and ("@" not in entry or len(entry) > 254 or any(c.isspace() for c in entry)):
            raise ValidationError(f"“{entry[:60]}” is not a mailbox address.")


class ProviderForm(FlaskForm):
    kind = SelectField("Provider", choices=[SelectChoice(k, v) for k, v in KINDS.items()], default=GOOGLE)
    name = StringField("Name", description="Shown as “Sign in with <name>” on mail account and SMTP server forms.",
                       validators=[InputRequired(), Length(max=100), no_control_chars, no_line_breaks],
                       filters=[strip])
    tenant = StringField("Microsoft 365 tenant", description="Your directory (tenant) id or domain; organizations "
                         "for any work account, common for work and personal accounts.",
                         validators=[Optional(), Length(max=100), no_line_breaks], filters=[strip])
    discovery_url = StringField("Discovery URL (another provider)", description="Its .well-known/openid-configuration "
                                "(or oauth-authorization-server) address; or give the two endpoints below.",
                                validators=[Optional(), Length(max=500), no_line_breaks], filters=[strip])
    authorization_endpoint = StringField("Authorization endpoint (another provider)",
                                         validators=[Optional(), Length(max=500), no_line_breaks], filters=[strip])
    token_endpoint = StringField("Token endpoint (another provider)",
                                 validators=[Optional(), Length(max=500), no_line_breaks], filters=[strip])
    scopes = StringField("Scopes", description="Leave empty for Google and Microsoft 365: their documented scopes "
                         "are used. Include what gives a refresh token (offline_access, for most providers).",
                         validators=[Optional(), Length(max=1000), no_line_breaks], filters=[strip])
    client_id = StringField("Client id", validators=[InputRequired(), Length(max=300), no_line_breaks,
                                                     no_control_chars], filters=[strip])
    client_secret = PasswordField("Client secret", validators=[Length(max=1000), no_line_breaks])
    mail_hosts = TextAreaField("Mail servers its tokens may go to", description="One host name a line. Empty for "
                               "Google and Microsoft 365 means their own servers.",
                               validators=[Optional(), Length(max=2000), _hosts])
    app_mailboxes = TextAreaField("Mailboxes for app-only access (Microsoft 365)", description="One address a line: "
                                  "shared mailboxes a mail account may open with the app's own access (client "
                                  "credentials, no one signs in). Empty: app-only access is not offered.",
                                  validators=[Optional(), Length(max=5000), _addresses])
    app_scope = StringField("App-only scope", description="Microsoft 365: https://outlook.office365.com/.default "
                            "(filled in when mailboxes are listed).",
                            validators=[Optional(), Length(max=300), no_line_breaks], filters=[strip])
    submit = SubmitField("Save")

    def data_object(self) -> ProviderData:
        return ProviderData(**{name: getattr(self, name).data or "" for name in (
            "name", "kind", "client_id", "client_secret", "tenant", "discovery_url", "authorization_endpoint",
            "token_endpoint", "scopes", "app_scope", "mail_hosts", "app_mailboxes")})


class SignInFields:
    """Mixed into a connection form: Authentication (a password or a provider) and the finished sign-in's ticket."""

    auth_method = SelectField("Authentication", choices=[SelectChoice("password", "Password")], default="password",
                              validate_choice=False)
    oauth_ticket = HiddenField(validators=[Optional(), Length(max=64)])

    def offer_sign_in(self, options: list[tuple[str, str]]) -> None:
        self.auth_method.choices = [SelectChoice(value, label) for value, label in options]

    def validate_auth_method(self, field):
        if field.data not in {choice.value for choice in field.choices}:
            raise ValidationError("Choose one of the listed ways to sign in.")


def restored_form(form_class, **kwargs):
    """A connection form as it was when Connect was pressed, with the finished sign-in (or its error) noted on
    it; None when the page was not reached from a sign-in."""
    flow = flow_for_ticket(request.args.get("oauth", ""), current_user) if request.method == "GET" else None
    if flow is None:
        return None
    form = form_class(formdata=MultiDict(flow.draft), **kwargs)
    if flow.grant_id is not None:
        form.oauth_ticket.data = flow.ticket
        if not form.username.data and flow.grant.address:
            form.username.data = flow.grant.address
    form.sign_in = flow
    return form
