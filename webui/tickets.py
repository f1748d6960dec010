"""One ticket: its conversation and history, and the changes an agent makes to it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from models import changes, outbox, presence, queries, replies
from models.errors import DomainError
from models.queues import queue_named
from models.schema import Agent, Message, Ticket
from models.tickets import AttachmentDraft, get_ticket
from webui import canned
from webui.extensions import assign_and_notify, db, me, settings, wake_sender, write
from webui.forms import NoteForm, ReplyForm, note_form, reply_form
from webui.ticket_view import conversation

bp = Blueprint("tickets", __name__)


@bp.route("/tickets/<int:ticket_id>")
@login_required
def show(ticket_id: int) -> str | Response:
    ticket = get_ticket(db(), ticket_id)
    if ticket.merged_into_id:
        target = get_ticket(db(), ticket_id, follow_merge=True)
        flash(f"Ticket #{ticket.id} was merged into #{target.id}.", "info")
        return redirect(url_for("tickets.show", ticket_id=target.id))
    with write() as session:
        presence.record_view(session, ticket.id, me().id)
    return render_ticket(ticket, prefill=canned.render_for(request.args.get("canned", ""),
                                                          ticket, me()))


def render_ticket(ticket: Ticket, *, form: ReplyForm | None = None, note: NoteForm | None = None,
                  held: list[Message] | None = None, kept: list[AttachmentDraft] = (),
                  prefill: str = "", status: int = 200) -> tuple[str, int]:
    """The whole page; the composer re-renders it with a held reply and what arrived."""
    session = db()
    messages = conversation(session, ticket.id)
    newest = max((m.message.id for m in messages), default=0)
    return render_template(
        "tickets/show.html", ticket=ticket, messages=messages,
        events=queries.ticket_events(session, ticket.id),
        form=form or reply_form(ticket, settings().our_addresses, newest, text=prefill),
        note=note or note_form(), held=held or [], kept=kept, newest=newest,
        warning=replies.delivery_warning(session, ticket),
        viewers=queries.viewers(session, ticket.id, besides=me().id),
        agents=queries.active_agents(session), queues=[q.name for q in settings().queues],
        statuses=settings().tickets.statuses, priorities=settings().tickets.priorities,
        tag=settings().tickets.tag, canned_names=canned.names(),
    ), status


@bp.route("/tickets/<int:ticket_id>/presence", methods=["POST"])
@login_required
def heartbeat(ticket_id: int) -> Response:
    """The open page says it is still there (or leaving); the answer is who else is, and the
    newest message id so the page can tell the agent something arrived."""
    leaving = request.form.get("leave") == "1"
    get_ticket(db(), ticket_id)  # 404 for a ticket that is not there
    with write() as session:
        presence.record_view(session, ticket_id, me().id, present=not leaving,
                             composing=request.form.get("composing") == "1")
    others = queries.viewers(db(), ticket_id, besides=me().id)
    return jsonify(viewers=[{"name": v.agent.name, "composing": v.composing} for v in others],
                   newest=queries.newest_message_id(db(), ticket_id))


@bp.route("/tickets/<int:ticket_id>/properties", methods=["POST"])
@login_required
def properties(ticket_id: int) -> Response:
    """Status, priority, queue, assignee and tags: whichever the form carries, each through its
    domain operation and Event, all in one transaction."""
    form, allowed = request.form, settings().tickets
    with write() as session:
        ticket, agent = get_ticket(session, ticket_id), me()
        if "status" in form:
            _check(form["status"] in allowed.statuses)
            changes.change_status(session, ticket, form["status"], actor=agent)
        if "priority" in form:
            _check(form["priority"] in allowed.priorities)
            changes.change_priority(session, ticket, form["priority"], actor=agent)
        if "queue" in form:
            queue = queue_named(session, form["queue"])
            _check(queue is not None and form["queue"] in [q.name for q in settings().queues])
            changes.change_queue(session, ticket, queue, actor=agent)
        if "assignee" in form:
            assign_and_notify(session, ticket, _assignee(form["assignee"], agent), actor=agent)
        if "tags" in form:
            changes.set_tags(session, ticket, form["tags"].replace(",", " ").split(),
                             actor=agent)
    return redirect(url_for("tickets.show", ticket_id=ticket_id))


@bp.route("/tickets/<int:ticket_id>/merge", methods=["POST"])
@login_required
def merge(ticket_id: int) -> Response:
    target_id = _ticket_number(request.form.get("target", ""))
    try:
        with write() as session:
            source, target = get_ticket(session, ticket_id), get_ticket(session, target_id)
            changes.merge(session, source, target, actor=me())
    except DomainError as error:
        flash(str(error), "error")
        return redirect(url_for("tickets.show", ticket_id=ticket_id))
    flash(f"Ticket #{ticket_id} was merged into this one.", "info")
    return redirect(url_for("tickets.show", ticket_id=target_id))


@bp.route("/messages/<int:message_id>/move", methods=["POST"])
@login_required
def move(message_id: int) -> Response:
    target_id = _ticket_number(request.form.get("target", ""))
    with write() as session:
        message = _message(message_id)
        source_id = message.ticket_id
        try:
            changes.move_message(session, message, get_ticket(session, target_id), actor=me())
        except DomainError as error:
            flash(str(error), "error")
            return redirect(url_for("tickets.show", ticket_id=source_id))
    flash(f"The message moved here from ticket #{source_id}.", "info")
    return redirect(url_for("tickets.show", ticket_id=target_id, _anchor=f"m{message_id}"))


@bp.route("/messages/<int:message_id>/split", methods=["POST"])
@login_required
def split(message_id: int) -> Response:
    with write() as session:
        message = _message(message_id)
        source = get_ticket(session, message.ticket_id)
        ticket = changes.split_message(session, message, source.queue, actor=me())
    flash(f"The message is now ticket #{ticket.id}, split from #{source.id}.", "info")
    return redirect(url_for("tickets.show", ticket_id=ticket.id))


@bp.route("/tickets/<int:ticket_id>/deliveries/<int:outbox_id>/retry", methods=["POST"])
@login_required
def retry_delivery(ticket_id: int, outbox_id: int) -> Response:
    """A failed reply goes out again: queued now, with a fresh set of tries."""
    with write() as session:
        row = outbox.get_outbox(session, outbox_id)
        if row.ticket_id != ticket_id:
            abort(404)
        outbox.retry(session, outbox_id)
    wake_sender()
    flash("The reply is queued again.", "info")
    return redirect(url_for("tickets.show", ticket_id=ticket_id))


def _assignee(value: str, agent: Agent) -> Agent | None:
    if value in ("", "none"):
        return None
    if value == "me":
        return agent
    target = db().get(Agent, int(value)) if value.isdigit() else None
    _check(target is not None and target.active)
    return target


def _message(message_id: int) -> Message:
    message = db().scalar(select(Message).where(Message.id == message_id))
    if message is None:
        abort(404)
    return message


def _ticket_number(value: Any) -> int:
    digits = str(value).strip().lstrip("#")
    _check(digits.isdigit())
    return int(digits)


def _check(condition: bool) -> None:
    if not condition:
        abort(400)
