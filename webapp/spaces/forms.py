"""Space and role forms."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional, Regexp

from webapp.auth.forms import PersonFields
from webapp.formtools import no_control_chars, strip
from webapp.spaces.models import ROLE_LABELS

ROLE_CHOICES = [SelectChoice(value, label) for value, label in ROLE_LABELS.items()]



class SpaceFields(FlaskForm):
    name = StringField("Name", validators=[InputRequired(), Length(max=200), no_control_chars], filters=[strip])
    description = TextAreaField("Description (optional)", validators=[Length(max=2000)], filters=[strip])


class NewSpaceForm(SpaceFields):
    key = StringField(
        "Space key",
        description="Letters and digits, shown in links (for example TEAM or OPS2). Suggested from the name; "
                    "left empty, it is made from the name.",
        validators=[
            Optional(),
            Regexp(r"^[A-Za-z][A-Za-z0-9]{1,31}$", message="2-32 letters and digits, starting with a letter."),
        ],
        filters=[lambda v: v.strip().upper() if isinstance(v, str) else v],
    )
    submit = SubmitField("Create space")


class SpaceSettingsForm(SpaceFields):
    everyone_can_view = BooleanField("Every signed-in person can view this space")
    submit = SubmitField("Save settings")


class AddRoleForm(FlaskForm):
    person = StringField("Person (username or email)", validators=[InputRequired(), Length(max=254)], filters=[strip])
    role = SelectField("Role", choices=ROLE_CHOICES, default="view")
    submit = SubmitField("Add")


class ChangeRoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class InviteToSpaceForm(FlaskForm):
    email = PersonFields.email
    role = SelectField("Their role here", choices=ROLE_CHOICES, default="view")
    submit = SubmitField("Invite")
