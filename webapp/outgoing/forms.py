"""The SMTP server form, Send Test Email, the error queue's selection and the retry schedule."""
from flask_wtf import FlaskForm
from wtforms import (
    IntegerField, PasswordField, RadioField, SelectField, StringField, SubmitField, TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Email, InputRequired, Length, NumberRange, Optional, ValidationError

from webapp.formtools import hostname, no_control_chars, no_line_breaks, pem_certificates, strip
from webapp.oauth.forms import SignInFields
from webapp.outgoing.compose import FROM_VARIABLES, unknown_variables
from webapp.outgoing.models import DEFAULT_FROM_NAME, REPLY_TO_POLICIES, SECURITY
from webapp.outgoing.servers import ServerData

_ONE_LINE = [no_line_breaks, no_control_chars]


def known_variables(form, field):
    unknown = unknown_variables(field.data or "")
    if unknown:
        shown = ", ".join(name if name == "${" else "${" + name + "}" for name in unknown)
        raise ValidationError(f"Unknown variable {shown}: the From name knows "
                              + ", ".join("${" + v + "}" for v in FROM_VARIABLES) + ".")


class ServerForm(SignInFields, FlaskForm):
    name = StringField("Name", default="SMTP Server", validators=[InputRequired(), Length(max=100), *_ONE_LINE],
                       filters=[strip])
    from_address = StringField("From address", validators=[
        InputRequired(message="Enter the address mail is sent from."), Length(max=254), *_ONE_LINE,
        Email(message="Enter a mail address such as spacemail@example.org.", check_deliverability=False)],
        filters=[strip])
    from_name = StringField("From name", default=DEFAULT_FROM_NAME,
                            description="Variables: ${fullname}, ${email}, ${email.hostname} of the person whose "
                                        "action caused the mail.",
                            validators=[Length(max=200), *_ONE_LINE, known_variables], filters=[strip])
    subject_prefix = StringField("Subject prefix", default="[Spacemail]", validators=[Length(max=100), *_ONE_LINE],
                                 filters=[strip])
    host = StringField("Hostname", validators=[InputRequired(message="Enter the SMTP server's hostname."),
                                               Length(max=253), no_line_breaks, hostname], filters=[strip])
    security = SelectField("Security", choices=[SelectChoice(k, v) for k, v in SECURITY.items()],
                           default="starttls")
    port = IntegerField("Port", validators=[InputRequired(message="Enter a port number."),
                                            NumberRange(1, 65535, "The port must be between 1 and 65535.")])
    username = StringField("Username", description="Leave empty for a server that relays by address (no AUTH).",
                           validators=[Optional(), Length(max=254), *_ONE_LINE], filters=[strip])
    password = PasswordField("Password", validators=[Length(max=1000), no_line_breaks])
    timeout_seconds = IntegerField("Timeout (seconds)", default=30,
                                   validators=[InputRequired(message="Enter a timeout in seconds."),
                                               NumberRange(1, 300, "Choose 1 to 300 seconds.")])
    max_per_minute = IntegerField("Mails a minute at most", default=0,
                                  description="The provider's sending limit (0: none). Mail over it waits; it never "
                                              "fails for it.",
                                  validators=[Optional(), NumberRange(0, 100000, "Choose 0 to 100,000 mails a minute.")])
    max_connections = IntegerField("Connections at most", default=0,
                                   description="Open connections to this server across all senders (0: no limit).",
                                   validators=[Optional(), NumberRange(0, 100, "Choose 0 to 100 connections.")])
    reply_to_policy = SelectField("Reply-To", choices=[SelectChoice(k, v) for k, v in REPLY_TO_POLICIES.items()],
                                  default="none")
    trusted_ca_pem = TextAreaField(
        "Trusted CA certificate (PEM, optional)",
        description="Only for a server with a certificate from its own CA. Otherwise the system's trust store decides.",
        validators=[Optional(), Length(max=20000), pem_certificates], filters=[strip])
    submit = SubmitField("Add server")

    def data_object(self) -> ServerData:
        return ServerData(
            name=self.name.data, from_address=self.from_address.data, from_name=self.from_name.data or "",
            subject_prefix=self.subject_prefix.data or "", host=self.host.data, port=self.port.data,
            security=self.security.data, username=self.username.data or "", password=self.password.data or "",
            timeout_seconds=self.timeout_seconds.data, reply_to_policy=self.reply_to_policy.data,
            max_per_minute=self.max_per_minute.data or 0, max_connections=self.max_connections.data or 0,
            trusted_ca_pem=self.trusted_ca_pem.data or "", auth_method=self.auth_method.data or "password",
            oauth_ticket=self.oauth_ticket.data or "",
        )


class TestEmailForm(FlaskForm):
    to = StringField("To", validators=[InputRequired(message="Enter the address to send the test to."),
                                       Length(max=254), *_ONE_LINE,
                                       Email(message="Enter a mail address.", check_deliverability=False)],
                     filters=[strip])
    subject = StringField("Subject", default="Test email from Spacemail",
                          validators=[InputRequired(), Length(max=200), *_ONE_LINE], filters=[strip])
    body = TextAreaField("Body", default="This is a test email. If you can read it, the server sends mail.",
                         validators=[InputRequired(), Length(max=10000)])
    how = RadioField("How", default="direct", choices=[
        SelectChoice("direct", "Straight to this server, showing the SMTP conversation"),
        SelectChoice("queue", "Through the mail queue, retried like other mail")])
    submit = SubmitField("Send test email")


class SelectionForm(FlaskForm):
    """Resend or Delete for the rows ticked in the error queue (or the one row whose button was pressed)."""

    action = SelectField("Action", choices=[SelectChoice("resend", "Resend"), SelectChoice("delete", "Delete")])


class RetryScheduleForm(FlaskForm):
    mail_retry_minutes = StringField(
        "Retry after (minutes)", description="Waits between attempts, e.g. 1, 5, 15, 60, 240. After the last, "
                                             "a mail goes to the error queue.",
        validators=[InputRequired(), Length(max=100)], filters=[strip])
    submit = SubmitField("Save")

    def validate_mail_retry_minutes(self, field):
        parts = field.data.replace(",", " ").split()
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 10:
            raise ValidationError("Enter one to ten whole numbers of minutes, separated by commas.")
        if not all(1 <= int(p) <= 10080 for p in parts):
            raise ValidationError("Each wait must be from 1 minute to 7 days (10080 minutes).")
        field.data = ", ".join(str(int(p)) for p in parts)


class ActionForm(FlaskForm):
    """Only the CSRF token: remove, make default, flush."""


class DkimForm(FlaskForm):
    domain = StringField("Sending domain", description="The domain of a server's From address (example.org).",
                         validators=[InputRequired(message="Enter the domain to sign for."), Length(max=253),
                                     *_ONE_LINE], filters=[strip])
    selector = StringField("Selector", default="spacemail",
                           description="The DNS name's first label: the record goes at "
                                       "<selector>._domainkey.<domain>.",
                           validators=[InputRequired(), Length(max=63), *_ONE_LINE], filters=[strip])
    submit = SubmitField("Generate key")
