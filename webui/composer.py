"""The composer: a reply mailed to the requester, an internal note, canned responses.

A reply is held on the server, not only in the page, when a customer's mail or another
agent's reply arrived after the composer opened: the agent reads it and confirms. The
form's submission key makes a double click or a resent form queue the reply once.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from flask import Blueprint, flash, jsonify, redirect, url_for
from flask_login import login_required
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from models import queries
from models.errors import NotFound
from models.replies import queue_reply
from models.schema import Message, Ticket
from models.tickets import AttachmentDraft, add_note, get_ticket
from webui import canned
from webui.extensions import db, me, service, settings, wake_sender, write
from webui.forms import NoteForm, ReplyForm, cc_choices
from webui.tickets import render_ticket

bp = Blueprint("composer", __name__)
KEY = re.compile(r"^[0-9a-f]{32}$")
UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]+")


@bp.route("/tickets/<int:ticket_id>/reply", methods=["POST"])
@login_required
def reply(ticket_id: int) -> Response | tuple[str, int]:
    ticket = get_ticket(db(), ticket_id)
    form = ReplyForm()
    form.cc.choices = cc_choices(ticket, settings().our_addresses)
    if not form.validate() or not KEY.match(form.key.data or ""):
        return render_ticket(ticket, form=form, status=400)
    try:
        attachments = _held(form.held.data) + _store_uploads(form.attachments.data)
    except ValueError as error:
        form.attachments.errors = [str(error)]
        return render_ticket(ticket, form=form, status=400)
    status_after = "pending" if form.send_pending.data else (
        "solved" if form.send_solved.data else None)
    seen = int(form.seen.data) if (form.seen.data or "").isdigit() else 0
    with write() as session:
        ticket = _locked(session, ticket_id)
        arrived = [] if _submitted(form.key.data) else queries.arrived_since(
            session, ticket.id, seen, agent_id=me().id)
        message = None if arrived else queue_reply(
            session, ticket, agent=me(), text=form.text.data or "", tag=settings().tickets.tag,
            cc=form.cc.data or [], attachments=attachments, status_after=status_after,
            submission_key=form.key.data)
    if message is None:
        form.seen.data = str(queries.newest_message_id(db(), ticket.id))
        form.held.data = _sign(attachments)
        return render_ticket(ticket, form=form, held=arrived, kept=attachments, status=409)
    wake_sender()
    flash(f"Reply queued for {', '.join([*message.to, *message.cc])}.", "info")
    return redirect(url_for("tickets.show", ticket_id=ticket_id, _anchor=f"m{message.id}"))


@bp.route("/tickets/<int:ticket_id>/note", methods=["POST"])
@login_required
def note(ticket_id: int) -> Response | tuple[str, int]:
    ticket = get_ticket(db(), ticket_id)
    form = NoteForm()
    if not form.validate() or not KEY.match(form.key.data or ""):
        return render_ticket(ticket, note=form, status=400)
    try:
        with write() as session:
            if not _submitted(form.key.data):
                add_note(session, get_ticket(session, ticket_id), form.note.data or "",
                         agent=me(), submission_key=form.key.data)
    except IntegrityError:  # the same form, submitted twice at once: the first one counts
        pass
    flash("Note added.", "info")
    return redirect(url_for("tickets.show", ticket_id=ticket_id, _anchor="composer"))


@bp.route("/tickets/<int:ticket_id>/canned/<name>")
@login_required
def canned_text(ticket_id: int, name: str) -> Response:
    """A canned response filled in for this ticket, for the page's script to insert."""
    return jsonify(text=canned.render_for(name, get_ticket(db(), ticket_id), me()))


def _locked(session: Session, ticket_id: int) -> Ticket:
    """The ticket, locked until this reply commits: a customer's mail or another agent's
    reply updates the ticket row too, so it waits, or we wait and then see it. (SQLite's
    write lock, taken when the transaction began, does the same.)"""
    ticket = session.scalar(select(Ticket).where(Ticket.id == ticket_id).with_for_update()
                            .execution_options(populate_existing=True))
    if ticket is None:
        raise NotFound(f"no ticket #{ticket_id}")
    return ticket


def _submitted(key: str) -> bool:
    return db().scalar(select(Message.id).where(Message.submission_key == key)) is not None


def _store_uploads(files: list[FileStorage] | None) -> list[AttachmentDraft]:
    """Files from the form into the blob store; names kept for the mail, never for a path."""
    limits, drafts = settings().limits, []
    for upload in files or []:
        if not upload or not upload.filename:
            continue
        data = upload.read()
        if len(data) > limits.max_attachment_size:
            raise ValueError(f"{upload.filename} is larger than "
                             f"{limits.max_attachment_size // 1_048_576} MB")
        drafts.append(AttachmentDraft(
            filename=safe_filename(upload.filename),
            content_type=upload.mimetype or "application/octet-stream", size=len(data),
            sha256=service("store").put(data)))
    if len(drafts) > limits.max_attachments:
        raise ValueError(f"at most {limits.max_attachments} attachments")
    return drafts


def safe_filename(name: str) -> str:
    """The last path part, without control characters: what a mail client will show."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return UNSAFE_NAME.sub("", base).strip()[:200] or "attachment"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(settings().secret_key, salt="held-attachments")


def _sign(attachments: list[AttachmentDraft]) -> str:
    return _serializer().dumps([[a.filename, a.content_type, a.size, a.sha256]
                                for a in attachments])


def _held(token: str | None) -> list[AttachmentDraft]:
    """Files uploaded with a held reply; signed, so a form cannot name someone else's blob."""
    if not token:
        return []
    try:
        return [AttachmentDraft(*item) for item in _serializer().loads(token)]
    except (BadSignature, TypeError, ValueError):
        return []
