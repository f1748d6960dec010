"""Changes agents make to a ticket: status, priority, assignee, queue, tags, merge, split.

Each records its Event; none commits. Values are checked against what config.toml
allows by the caller, which knows the configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.errors import Conflict
from models.events import EventKind, record_event
from models.schema import Agent, Event, Message, Participant, Queue, Tag, Ticket, utcnow
from models.tickets import CLOSED, change_status_quietly, open_ticket_shell


def change_status(session: Session, ticket: Ticket, status: str, *, actor: Agent) -> None:
    change_status_quietly(session, ticket, status, actor=actor)
    ticket.updated_at = utcnow()


def change_priority(session: Session, ticket: Ticket, priority: str, *, actor: Agent) -> None:
    if ticket.priority != priority:
        record_event(session, ticket, EventKind.PRIORITY, actor=actor, old=ticket.priority,
                     new=priority)
        ticket.priority = priority


def assign(session: Session, ticket: Ticket, agent: Agent | None, *, actor: Agent) -> Event | None:
    """An Event, so history shows who moved the ticket and the same commit can queue the
    assignee's notification. None unassigns."""
    if ticket.assignee_id == (agent.id if agent else None):
        return None
    old = ticket.assignee.email if ticket.assignee else None
    ticket.assignee_id = agent.id if agent else None
    ticket.assignee = agent
    return record_event(session, ticket, EventKind.ASSIGNED, actor=actor, old=old,
                        new=agent.email if agent else None)


def change_queue(session: Session, ticket: Ticket, queue: Queue, *, actor: Agent) -> None:
    if ticket.queue_id != queue.id:
        record_event(session, ticket, EventKind.QUEUE, actor=actor, old=ticket.queue.name,
                     new=queue.name)
        ticket.queue_id = queue.id
        ticket.queue = queue


def set_tags(session: Session, ticket: Ticket, names: Iterable[str], *, actor: Agent) -> None:
    wanted = sorted({n.strip().lower()[:64] for n in names if n.strip()})
    old = [t.name for t in ticket.tags]
    if wanted == old:
        return
    known = {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(wanted)))}
    for name in wanted:
        if name not in known:
            known[name] = Tag(name=name)
            session.add(known[name])
    ticket.tags = [known[n] for n in wanted]
    record_event(session, ticket, EventKind.TAGS, actor=actor, old=",".join(old),
                 new=",".join(wanted))


def merge(session: Session, source: Ticket, target: Ticket, *, actor: Agent | None) -> None:
    """A duplicate's messages and people move to the target, which it then points to; it closes.
    Without an actor the gateway did it (a reply that arrived before its parent)."""
    if source.id == target.id:
        raise Conflict("a ticket cannot be merged into itself")
    if target.merged_into_id:
        raise Conflict(f"ticket #{target.id} was itself merged into #{target.merged_into_id}")
    moved = session.execute(
        update(Message).where(Message.ticket_id == source.id).values(ticket_id=target.id)
    ).rowcount
    present = {p.contact_id for p in target.participants}
    for participant in source.participants:
        if participant.contact_id not in present:
            target.participants.append(Participant(contact_id=participant.contact_id, role="cc"))
    target.message_count = (target.message_count or 0) + moved
    source.message_count = 0
    source.merged_into_id = target.id
    target.updated_at = utcnow()
    record_event(session, target, EventKind.MERGED, actor=actor, new=f"#{source.id}")
    record_event(session, source, EventKind.MERGED_INTO, actor=actor, new=f"#{target.id}")
    change_status_quietly(session, source, CLOSED, actor=actor)


def move_message(session: Session, message: Message, target: Ticket, *, actor: Agent) -> None:
    """A message threaded onto the wrong ticket moves to the right one, with an Event on both."""
    source = session.get(Ticket, message.ticket_id)
    if source is None or source.id == target.id:
        raise Conflict("the message is already on that ticket")
    message.ticket_id = target.id
    source.message_count -= 1
    target.message_count += 1
    target.updated_at = utcnow()
    for ticket, value in ((source, f"to #{target.id}"), (target, f"from #{source.id}")):
        record_event(session, ticket, EventKind.MESSAGE_MOVED, actor=actor, new=value,
                     message_row_id=message.id)


def split_message(session: Session, message: Message, queue: Queue, *, actor: Agent) -> Ticket:
    """A message that started a new matter becomes a ticket of its own."""
    source = session.get(Ticket, message.ticket_id)
    ticket = open_ticket_shell(session, subject=message.subject or source.subject, queue=queue,
                               requester_address=message.from_address,
                               requester_name=message.from_name, priority=source.priority)
    move_message(session, message, ticket, actor=actor)
    record_event(session, ticket, EventKind.SPLIT, actor=actor, old=f"#{source.id}")
    return ticket
