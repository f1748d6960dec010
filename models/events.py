"""The audit history: every domain operation records who did what, when, old and new."""

from __future__ import annotations

import enum

from sqlalchemy.orm import Session

from models.schema import Agent, Contact, Event, Message, Ticket


class EventKind(enum.StrEnum):
    CREATED = "created"
    CUSTOMER_MESSAGE = "customer_message"
    AUTO_MESSAGE = "auto_message"  # a robot's mail stored without touching the ticket's state
    REPLY = "reply"
    NOTE = "note"
    STATUS = "status"
    PRIORITY = "priority"
    ASSIGNED = "assigned"
    QUEUE = "queue"
    TAGS = "tags"
    MERGED = "merged"  # another ticket was merged into this one
    MERGED_INTO = "merged_into"  # this ticket was merged into another
    MESSAGE_MOVED = "message_moved"
    SPLIT = "split"
    DELIVERY_FAILED = "delivery_failed"


def record_event(
    session: Session,
    ticket: Ticket,
    kind: EventKind,
    *,
    actor: Agent | Contact | None = None,
    old: object = None,
    new: object = None,
    message: Message | None = None,
    message_row_id: int | None = None,
) -> Event:
    """Objects, not ids, link the event: nothing needs flushing first, so a batch of
    messages is written in one flush per message instead of several."""
    event = Event(
        ticket=ticket,
        kind=str(kind),
        actor_agent=actor if isinstance(actor, Agent) else None,
        actor_contact=actor if isinstance(actor, Contact) else None,
        old=None if old is None else str(old),
        new=None if new is None else str(new),
    )
    if message is not None:
        event.message_row = message
    elif message_row_id is not None:
        event.message_row_id = message_row_id
    session.add(event)
    return event
