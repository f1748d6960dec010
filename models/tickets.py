"""Tickets and their messages: an agent's reply, a note, our own mail, a split's new ticket,
and the rows and status changes every path shares (a customer's mail: customer_mail.py).

Each operation takes a Session and never commits: the caller's transaction makes the
ticket change, its Event and any outbox rows land together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.contacts import contact_for
from models.db import new_ids
from models.errors import NotFound
from models.events import EventKind, record_event
from models.schema import (
    Agent,
    Attachment,
    Contact,
    Direction,
    Message,
    Participant,
    Queue,
    Ticket,
    utcnow,
)

OPEN, PENDING, SOLVED, CLOSED, NEW = "open", "pending", "solved", "closed", "new"
REOPENED_BY_CUSTOMER = {PENDING, SOLVED, CLOSED}
SNIPPET_CHARS = 200


@dataclass(frozen=True)
class AttachmentDraft:
    filename: str
    content_type: str
    size: int
    sha256: str  # bytes already in the blob store
    content_id: str | None = None
    inline: bool = False


@dataclass
class MessageDraft:
    """Everything about one message but where it goes; the gateway and the web UI fill it."""

    direction: Direction
    dedup_key: str
    message_id: str | None = None
    from_address: str = ""
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str = ""
    sent_at: datetime | None = None
    text: str = ""
    html: str | None = None
    reply_text: str = ""
    in_reply_to: str | None = None
    references: str | None = None
    thread_root: str | None = None
    auto: str | None = None
    auto_reason: str = ""
    threaded_by: str = "new"
    threaded_ref: str = ""
    notes: list[str] = field(default_factory=list)
    thread_index: str | None = None
    thread_topic: str | None = None
    raw_id: int | None = None
    submission_key: str | None = None
    bounce_of_id: int | None = None
    attachments: list[AttachmentDraft] = field(default_factory=list)


def get_ticket(session: Session, ticket_id: int, *, follow_merge: bool = False) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket #{ticket_id}")
    seen = {ticket.id}
    while follow_merge and ticket.merged_into_id and ticket.merged_into_id not in seen:
        ticket = session.get(Ticket, ticket.merged_into_id) or ticket
        seen.add(ticket.id)
    return ticket


def open_ticket_shell(
    session: Session, *, subject: str, queue: Queue, requester_address: str,
    requester_name: str = "", priority: str = "normal",
) -> Ticket:
    """A ticket with its requester and CREATED event, before any message is on it (a split).
    A customer's mail opens its ticket through models/customer_mail.py instead."""
    requester = contact_for(session, requester_address, requester_name)
    ticket = Ticket(**ticket_columns(subject=subject, queue=queue, requester=requester,
                                     priority=priority, customer_activity=True), queue=queue,
                    requester=requester)
    session.add(ticket)
    ticket.participants.append(Participant(contact=requester, role="requester"))
    record_event(session, ticket, EventKind.CREATED, actor=requester, new=queue.name)
    session.flush()
    return ticket


def ticket_columns(*, subject: str, queue: Queue, requester: Contact, priority: str,
                   customer_activity: bool) -> dict[str, object]:
    """A new ticket's row, before its first message is counted on it."""
    now = utcnow()
    return {"subject": subject[:2000], "status": NEW, "priority": priority,
            "queue_id": queue.id, "requester_id": requester.id, "snippet": "",
            "message_count": 0, "created_at": now, "updated_at": now,
            "last_customer_at": now if customer_activity else None}


def add_agent_reply(session: Session, ticket: Ticket, draft: MessageDraft, *, agent: Agent
                    ) -> Message:
    """An agent's answer to the customer: the first one stops the first-response clock."""
    message = _add_message(session, ticket, draft, author=agent)
    now = utcnow()
    ticket.last_agent_at = ticket.updated_at = now
    ticket.first_response_at = ticket.first_response_at or now
    if ticket.status == NEW:
        change_status_quietly(session, ticket, OPEN, actor=agent)
    record_event(session, ticket, EventKind.REPLY, actor=agent, message=message)
    session.flush()  # callers (outbox rows, the web UI) need the message's id
    return message


def add_system_message(session: Session, ticket: Ticket, draft: MessageDraft) -> Message:
    """Mail the gateway itself sends on a ticket (an acknowledgement): shown in the
    conversation so replies to it thread, but no agent activity and no state change."""
    message = _add_message(session, ticket, draft, author=None)
    message.id = new_ids(session, Message.__table__, 1)[0]  # written with the next flush
    return message


def add_note(session: Session, ticket: Ticket, text: str, *, agent: Agent,
             submission_key: str | None = None) -> Message:
    """An internal note: part of the conversation for agents, never mailed to anyone."""
    draft = MessageDraft(
        direction=Direction.NOTE, dedup_key=f"note:{submission_key or _unique()}",
        from_address=agent.email, from_name=agent.name, text=text, reply_text=text,
        subject=ticket.subject, submission_key=submission_key,
    )
    message = _add_message(session, ticket, draft, author=agent)
    ticket.updated_at = utcnow()
    record_event(session, ticket, EventKind.NOTE, actor=agent, message=message)
    session.flush()
    return message


def is_participant(session: Session, ticket: Ticket, address: str) -> bool:
    return session.scalar(
        select(Participant.contact_id).join(Contact)
        .where(Participant.ticket_id == ticket.id, Contact.email == address.strip().lower())
    ) is not None


def change_status_quietly(session: Session, ticket: Ticket, status: str, *,
                          actor: Agent | Contact | None) -> None:
    """Set the status and its timestamps, recording the Event (shared by every path)."""
    old = ticket.status
    if old == status:
        return
    ticket.status = status
    now = utcnow()
    ticket.solved_at = now if status == SOLVED else (ticket.solved_at if status == CLOSED else None)
    ticket.closed_at = now if status == CLOSED else None
    record_event(session, ticket, EventKind.STATUS, actor=actor, old=old, new=status)


def _add_message(session: Session, ticket: Ticket, draft: MessageDraft,
                 author: Agent | Contact | None) -> Message:
    message = Message(ticket=ticket, **message_columns(draft, author),
                      attachments=[Attachment(**attachment_columns(a))
                                   for a in draft.attachments])
    session.add(message)
    count_message(ticket, draft)
    return message


def message_columns(draft: MessageDraft, author: Agent | Contact | None) -> dict[str, object]:
    """A message's row (without its ticket), the same whichever way it is written."""
    return {
        "direction": str(draft.direction), "dedup_key": draft.dedup_key,
        "message_id": draft.message_id, "in_reply_to": draft.in_reply_to,
        "references": draft.references, "thread_root": draft.thread_root,
        "from_address": draft.from_address.lower(), "from_name": draft.from_name[:200],
        "to": draft.to, "cc": draft.cc, "subject": draft.subject,
        "sent_at": naive_utc(draft.sent_at), "created_at": utcnow(), "text": draft.text,
        "html": draft.html, "reply_text": draft.reply_text, "auto": draft.auto,
        "auto_reason": draft.auto_reason, "threaded_by": draft.threaded_by,
        "threaded_ref": draft.threaded_ref, "notes": draft.notes,
        "thread_index": draft.thread_index, "thread_topic": draft.thread_topic,
        "raw_id": draft.raw_id, "submission_key": draft.submission_key,
        "bounce_of_id": draft.bounce_of_id,
        "author_agent_id": author.id if isinstance(author, Agent) else None,
        "author_contact_id": author.id if isinstance(author, Contact) else None,
    }


def attachment_columns(attachment: AttachmentDraft) -> dict[str, object]:
    return {"filename": attachment.filename, "content_type": attachment.content_type,
            "size": attachment.size, "sha256": attachment.sha256,
            "content_id": attachment.content_id, "inline": attachment.inline}


def count_message(ticket: Ticket, draft: MessageDraft) -> None:
    """One more message on the ticket; a person's words become the inbox's snippet."""
    ticket.message_count = (ticket.message_count or 0) + 1
    if draft.direction != Direction.NOTE and not draft.auto:
        ticket.snippet = " ".join((draft.reply_text or draft.text).split())[:SNIPPET_CHARS]


def naive_utc(moment: datetime | None) -> datetime | None:
    """Columns hold naive UTC: an aware Date header would keep its wall clock on SQLite
    but be shifted by the server's time zone on PostgreSQL."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _unique() -> str:
    return uuid.uuid4().hex
