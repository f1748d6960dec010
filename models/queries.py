"""Read-only questions the CLI and the web UI ask; no writes here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models.schema import Event, Message, Participant, Ticket


def all_tickets(session: Session) -> list[Ticket]:
    return list(session.scalars(
        select(Ticket).options(selectinload(Ticket.tags)).order_by(Ticket.id)))


def ticket_messages(session: Session, ticket_id: int) -> list[Message]:
    """The conversation oldest first, attachments loaded."""
    return list(session.scalars(
        select(Message).where(Message.ticket_id == ticket_id)
        .options(selectinload(Message.attachments))
        .order_by(Message.created_at, Message.id)))


def ticket_events(session: Session, ticket_id: int) -> list[Event]:
    return list(session.scalars(
        select(Event).where(Event.ticket_id == ticket_id).order_by(Event.created_at, Event.id)))


def ticket_participants(session: Session, ticket_id: int) -> list[Participant]:
    return list(session.scalars(select(Participant).where(Participant.ticket_id == ticket_id)))


def recent_tickets(session: Session, *, limit: int) -> list[Ticket]:
    return list(session.scalars(
        select(Ticket).where(Ticket.merged_into_id.is_(None))
        .options(selectinload(Ticket.tags))
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(limit)))
