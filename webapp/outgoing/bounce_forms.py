"""The bounce mailbox form: a mail account's connection fields, the bounce address and the scoring settings."""
from wtforms import BooleanField, IntegerField, StringField
from wtforms.validators import Email, InputRequired, Length, NumberRange

from webapp.archive.forms import ServiceMailboxForm
from webapp.formtools import strip


class BounceMailboxForm(ServiceMailboxForm):
    """Where bounces arrive, and when an address is suppressed."""

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
