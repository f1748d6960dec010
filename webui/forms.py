"""Flask-WTF forms: every POST carries and checks a CSRF token."""

from __future__ import annotations

import uuid

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    MultipleFileField,
    PasswordField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, EqualTo, Length
from wtforms.widgets import CheckboxInput, ListWidget

from models.schema import Ticket
from models.users import MIN_PASSWORD_LENGTH


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    submit = SubmitField("Log in")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField("New password",
                        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH)])
    confirm = PasswordField("Repeat the new password",
                            validators=[EqualTo("new", message="The two passwords differ.")])
    submit = SubmitField("Change password")


class ActionForm(FlaskForm):
    """A form with no fields but the CSRF token, for buttons such as Log out."""


class CheckboxList(SelectMultipleField):
    """Several choices as checkboxes, each labelled: how Cc is picked from the participants."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ReplyForm(FlaskForm):
    """A reply to the requester. `seen` is the newest message the agent had on screen, so the
    server can hold the send if someone wrote since; `key` makes a resubmission a no-op."""

    text = TextAreaField("Reply", validators=[DataRequired(message="Write a reply first.")])
    cc = CheckboxList("Cc", choices=[], validate_choice=True)
    attachments = MultipleFileField("Attach files")
    seen = HiddenField()
    key = HiddenField()
    held = HiddenField()  # attachments already stored while the send was held, signed
    send = SubmitField("Send")
    send_pending = SubmitField("Send and set pending")
    send_solved = SubmitField("Send and set solved")


class NoteForm(FlaskForm):
    """An internal note: shown to agents on the ticket, never mailed."""

    note = TextAreaField("Internal note", validators=[DataRequired(message="Write a note first.")])
    key = HiddenField()
    add = SubmitField("Add note")


class AgentForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    name = StringField("Name", validators=[Length(max=200)])
    admin = BooleanField("Administrator")
    submit = SubmitField("Add agent")


def cc_choices(ticket: Ticket, ours: frozenset[str]) -> list[tuple[str, str]]:
    """Participants other than the requester (who always gets the reply) and ourselves."""
    return [(p.contact.email, f"{p.contact.name} <{p.contact.email}>" if p.contact.name
             else p.contact.email)
            for p in ticket.participants
            if p.contact_id != ticket.requester_id and p.contact.email not in ours]


def reply_form(ticket: Ticket, ours: frozenset[str], newest: int, *, text: str = "") -> ReplyForm:
    """A fresh composer: a new submission key and the newest message id on screen."""
    form = ReplyForm(formdata=None, text=text, seen=str(newest), key=uuid.uuid4().hex)
    form.cc.choices = cc_choices(ticket, ours)
    return form


def note_form() -> NoteForm:
    return NoteForm(formdata=None, key=uuid.uuid4().hex)
