"""Small helpers every form uses: input filters and the checks that keep header and protocol text clean."""
import re

from wtforms.validators import ValidationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def strip(value):
    return value.strip() if isinstance(value, str) else value


def no_control_chars(form, field):
    """Names and addresses later land in mail headers: no line breaks or control characters."""
    if field.data and _CONTROL.search(field.data):
        raise ValidationError("Line breaks and control characters are not allowed here.")
