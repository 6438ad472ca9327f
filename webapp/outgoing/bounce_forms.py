"""The bounce mailbox form: a mail account's connection fields, the bounce address and the scoring settings."""
from wtforms import BooleanField, IntegerField, PasswordField, StringField, SubmitField
from wtforms.validators import Email, InputRequired, Length, NumberRange

from webapp.archive.forms import AccountForm
from webapp.formtools import strip


class BounceMailboxForm(AccountForm):
    """Where bounces arrive, and when an address is suppressed."""

    name = None
    description = None
    keep_on_server = None
    exclusive_mailbox = None
    enabled = BooleanField("Send with a bounce address, and read the bounces that come back")
    address = StringField("Bounce address", description="Every mail's envelope sender is this address with a signed "
                          "+tag (bounces+1234-…@example.org); the mailbox must accept plus-addressed mail and the "
                          "SMTP servers must keep the envelope sender (most relays do; Gmail's and Microsoft's "
                          "submission servers replace it with the signed-in mailbox).",
                          validators=[InputRequired(), Length(max=254), Email(check_deliverability=False)],
                          filters=[strip])
    threshold = IntegerField("Suppress an address at a bounce score of", default=4,
                             description="A hard bounce (5.x.x) counts 2, a soft one (4.x.x) 1, each mail once.",
                             validators=[InputRequired(), NumberRange(1, 100, "Choose 1 to 100.")])
    expire_days = IntegerField("Bounces count for (days)", default=30,
                               validators=[InputRequired(), NumberRange(1, 365, "Choose 1 to 365 days.")])
    password = PasswordField("Password", validators=[Length(max=1000)])
    submit = SubmitField("Save")
