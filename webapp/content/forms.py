"""Page, blog post and comment forms."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from webapp.formtools import no_control_chars, strip


class PageForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(message="Give the page a title."), Length(max=255),
                                             no_control_chars], filters=[strip])
    body = TextAreaField("Content (Markdown)", validators=[Length(max=500_000)])
    version = IntegerField(widget=HiddenField.widget, validators=[Optional()])
    submit = SubmitField("Save")


class CommentForm(FlaskForm):
    body = TextAreaField("Add a comment", validators=[DataRequired(message="Write something first."),
                                                      Length(max=20_000)], filters=[strip])
    submit = SubmitField("Comment")
