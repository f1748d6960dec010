"""Small builders the model tests share: a customer's draft, an agent, the default queue."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import users
from models.events import EventKind
from models.queues import queue_named
from models.schema import Agent, Direction, Event, Queue, Ticket
from models.tickets import MessageDraft

_serial = itertools.count(1)


def inbound(from_address: str = "anna@customer.example", **fields: Any) -> MessageDraft:
    """A customer's mail with a fresh Message-ID (its dedup key) unless one is given."""
    n = next(_serial)
    message_id = fields.pop("message_id", f"<m{n}@customer.example>")
    values: dict[str, Any] = {
        "direction": Direction.INBOUND, "dedup_key": message_id, "message_id": message_id,
        "from_address": from_address, "from_name": "Anna Schmidt",
        "to": ["support@example.com"], "subject": "Invoice charged twice",
        "text": f"Hello, message {n}.", "reply_text": f"Hello, message {n}.",
    }
    values.update(fields)
    return MessageDraft(**values)


def outbound(**fields: Any) -> MessageDraft:
    n = next(_serial)
    values: dict[str, Any] = {
        "direction": Direction.OUTBOUND, "dedup_key": f"<r{n}@mailgateway.test>",
        "message_id": f"<r{n}@mailgateway.test>", "from_address": "support@example.com",
        "to": ["anna@customer.example"], "subject": "Re: Invoice charged twice",
        "text": "We refunded it.", "reply_text": "We refunded it.",
    }
    values.update(fields)
    return MessageDraft(**values)


def agent(session: Session, email: str = "agent@example.com") -> Agent:
    return users.add_agent(session, email, name="Agent Smith", password="a-long-password",
                           must_change_password=False)


def default_queue(session: Session) -> Queue:
    queue = queue_named(session, "Support")
    assert queue is not None
    return queue


def events(session: Session, ticket: Ticket, kind: EventKind | None = None) -> list[Event]:
    """The ticket's Events in the order they were recorded, optionally of one kind."""
    query = select(Event).where(Event.ticket_id == ticket.id).order_by(Event.id)
    if kind is not None:
        query = query.where(Event.kind == str(kind))
    return list(session.scalars(query))
