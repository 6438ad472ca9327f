"""The mail account form and the system admin's mail archiving settings."""
import ipaddress

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField, IntegerField, MultipleFileField, PasswordField, SelectField, StringField, SubmitField, TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional, ValidationError

from webapp.archive.models import PROTOCOLS
from webapp.archive.services import AccountData
from webapp.formtools import HOST_RE, hostname, no_control_chars, no_line_breaks, pem_certificates, strip
from webapp.mailnet import ConnectionData
from webapp.oauth.forms import SignInFields


class AccountForm(SignInFields, FlaskForm):
    name = StringField("Account name", validators=[InputRequired(), Length(max=100), no_control_chars],
                       filters=[strip])
    description = TextAreaField("Description (optional)", validators=[Optional(), Length(max=1000)], filters=[strip])
    protocol = SelectField("Protocol", choices=[SelectChoice(k, v) for k, v in PROTOCOLS.items()], default="imaps")
    host = StringField("Hostname", validators=[InputRequired(), Length(max=253), no_line_breaks, hostname],
                       filters=[strip])
    port = IntegerField("Port", validators=[InputRequired(message="Enter a port number."),
                                            NumberRange(1, 65535, "The port must be between 1 and 65535.")])
    username = StringField("Username", validators=[InputRequired(), Length(max=254), no_line_breaks,
                                                   no_control_chars], filters=[strip])
    password = PasswordField("Password", validators=[Length(max=1000), no_line_breaks])
    require_starttls = BooleanField("Require STARTTLS (encrypt the plain port; never fall back)", default=True)
    folder = StringField("Folder", default="INBOX", validators=[Length(max=200), no_line_breaks, no_control_chars],
                         filters=[strip])
    trusted_ca_pem = TextAreaField(
        "Trusted CA certificate (PEM, optional)",
        description="Only for a server with a certificate from its own CA. Otherwise the system's trust store decides.",
        validators=[Optional(), Length(max=20000), pem_certificates], filters=[strip])
    keep_on_server = BooleanField("Leave messages on the server and remember what was fetched")
    exclusive_mailbox = BooleanField("This mailbox is Spacemail's alone: a plain EXPUNGE may be used",
                                     description="Only matters for an IMAP server without UIDPLUS or MOVE. Before "
                                     "each EXPUNGE Spacemail checks that no one else marked mail for deletion.")
    submit = SubmitField("Create")

    def connection_data(self) -> ConnectionData:
        return ConnectionData(
            protocol=self.protocol.data, host=self.host.data, port=self.port.data, username=self.username.data,
            password=self.password.data or "", require_starttls=self.require_starttls.data,
            folder=self.folder.data or "INBOX", trusted_ca_pem=self.trusted_ca_pem.data or "",
            auth_method=self.auth_method.data or "password", oauth_ticket=self.oauth_ticket.data or "",
            exclusive_mailbox=bool(self.exclusive_mailbox.data) if self.exclusive_mailbox else False,
        )

    def data_object(self) -> AccountData:
        return AccountData(**vars(self.connection_data()), name=self.name.data,
                           description=self.description.data or "", keep_on_server=self.keep_on_server.data)


class ServiceMailboxForm(AccountForm):
    """A mailbox the site reads for itself (replies, bounces): a mail account's connection fields, less the
    archive's own; subclasses add `enabled`, `address` and their settings."""

    name = None
    description = None
    keep_on_server = None
    exclusive_mailbox = None
    submit = SubmitField("Save")


class MailArchivingSettingsForm(FlaskForm):
    mail_host_allowlist = TextAreaField(
        "Private hosts and networks mail accounts may reach",
        description="One per line: 10.0.0.0/8, 192.168.1.20, 127.0.0.1, mail.lan. Public addresses are always allowed.",
        validators=[Length(max=5000)])
    fetch_interval_minutes = IntegerField("Fetch every (minutes)", default=30,
                                          validators=[InputRequired(), NumberRange(5, 1440, "Choose 5 to 1440 minutes.")])
    submit = SubmitField("Save")

    def validate_mail_host_allowlist(self, field):
        for line in (field.data or "").splitlines():
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not HOST_RE.match(entry):
                    raise ValidationError(f"“{entry[:60]}” is neither a network nor a host name.") from None


class ImportForm(FlaskForm):
    files = MultipleFileField("mbox file, or .eml files")
    submit = SubmitField("Import")

    def validate_files(self, field):
        if not [f for f in field.data or [] if getattr(f, "filename", "")]:
            raise ValidationError("Choose an mbox file or one or more .eml files.")
