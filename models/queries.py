"""Read-only questions the CLI and the web UI ask; no writes here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, literal_column, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from models.schema import (
    Agent,
    Direction,
    Event,
    Message,
    Outbox,
    OutboxState,
    Participant,
    Tag,
    Ticket,
    TicketTag,
    TicketView,
    utcnow,
)
from models.search import ticket_matches

# what a list of tickets shows besides the ticket itself, loaded with it (no N+1)
TICKET_LIST = (joinedload(Ticket.queue), joinedload(Ticket.requester),
               joinedload(Ticket.assignee), selectinload(Ticket.tags))


def all_tickets(session: Session) -> list[Ticket]:
    return list(session.scalars(
        select(Ticket).options(*TICKET_LIST).order_by(Ticket.id)))


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
        .options(*TICKET_LIST)
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(limit)))


# ---- one ticket's page ----------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    agent: Agent
    composing: bool


def viewers(session: Session, ticket_id: int, *, besides: int) -> list[Viewer]:
    """Other agents with the ticket open right now (their heartbeat has not lapsed)."""
    rows = session.execute(
        select(Agent, TicketView.composing).join(TicketView, TicketView.agent_id == Agent.id)
        .where(TicketView.ticket_id == ticket_id, TicketView.agent_id != besides,
               TicketView.present_until > utcnow())
        .order_by(Agent.name))
    return [Viewer(agent, composing) for agent, composing in rows]


def newest_message_id(session: Session, ticket_id: int) -> int:
    return session.scalar(select(func.max(Message.id)).where(Message.ticket_id == ticket_id)) or 0


def arrived_since(session: Session, ticket_id: int, seen_id: int, *, agent_id: int
                  ) -> list[Message]:
    """What should stop a reply written before it: a person's mail from the customer's side,
    or another agent's reply. Robots' mail, notes and our own messages do not."""
    return list(session.scalars(
        select(Message).where(
            Message.ticket_id == ticket_id, Message.id > seen_id,
            or_(and_(Message.direction == Direction.INBOUND, Message.auto.is_(None)),
                and_(Message.direction == Direction.OUTBOUND,
                     Message.author_agent_id.is_not(None),
                     Message.author_agent_id != agent_id)))
        .order_by(Message.id)))


def deliveries(session: Session, message_ids: Sequence[int]) -> dict[int, Outbox]:
    """The outbox row of each outbound message: its delivery state on the ticket page."""
    if not message_ids:
        return {}
    rows = session.scalars(select(Outbox).where(Outbox.message_row_id.in_(message_ids))
                           .order_by(Outbox.id))
    return {row.message_row_id: row for row in rows}


def active_agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).where(Agent.active).order_by(Agent.name)))


def all_tags(session: Session) -> list[str]:
    return list(session.scalars(select(Tag.name).order_by(Tag.name)))


# ---- admin: is mail flowing ---------------------------------------------------------------


def outbox_counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Outbox.state, func.count()).group_by(Outbox.state)).all())


def failed_outbox(session: Session, *, limit: int = 100) -> list[Outbox]:
    return list(session.scalars(select(Outbox).where(Outbox.state == OutboxState.FAILED)
                                .order_by(Outbox.id.desc()).limit(limit)))


def oldest_waiting(session: Session) -> datetime | None:
    return session.scalar(select(func.min(Outbox.created_at)).where(
        Outbox.state.in_((OutboxState.QUEUED, OutboxState.SENDING))))


# ---- the inbox: filters, keyset pages, sidebar counts ---------------------------------------

CURSOR_SEPARATOR = "~"


@dataclass(frozen=True)
class InboxFilter:
    """What the agent asked the inbox for; an empty filter is every ticket not merged away."""

    statuses: tuple[str, ...] = ()
    priority: str | None = None
    queue_id: int | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    tag: str | None = None
    text: str = ""
    sort: str = "updated"  # updated | created (id order: ids are given at creation) | priority


@dataclass(frozen=True)
class InboxRow:
    ticket: Ticket
    unread: bool  # the customer wrote since this agent last looked


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    newer: str | None  # cursor of the page before this one
    older: str | None  # cursor of the page after this one


@dataclass(frozen=True)
class InboxCounts:
    mine: int
    unassigned: int
    open: int
    by_queue: dict[int, int]  # open tickets per queue id
    by_status: dict[str, int]

    @property
    def version(self) -> str:
        """Changes whenever a count does; with the newest activity, what the page polls for."""
        return ",".join(map(str, (self.mine, self.unassigned, self.open,
                                  *sorted(self.by_queue.items()), *sorted(self.by_status.items()))))


def inbox_page(session: Session, flt: InboxFilter, *, agent_id: int, priorities: Sequence[str],
               after: str | None = None, before: str | None = None, limit: int = 50
               ) -> InboxPage:
    """One page in keyset order: every page, however deep, is an index range, never an OFFSET.
    `after` continues to older tickets, `before` goes back to newer ones. The ids come from
    the indexes alone; only the page's tickets are loaded, with their people and tags."""
    forward = before is None
    key = _parse_cursor(after if forward else before, flt.sort)
    query = _filtered(session, flt)
    if flt.sort == "priority":
        ids = _by_priority(session, query, list(priorities), key, forward, limit + 1)
    else:
        ids = _keyset(session, query, key, forward, limit + 1, by_id=flt.sort == "created")
    more, ids = len(ids) > limit, ids[:limit]
    if not forward:
        ids.reverse()
    if not ids:
        return InboxPage([], None, None)
    tickets = {t.id: t for t in session.scalars(
        select(Ticket).where(Ticket.id.in_(ids)).options(*TICKET_LIST))}
    seen = dict(session.execute(select(TicketView.ticket_id, TicketView.seen_at).where(
        TicketView.agent_id == agent_id, TicketView.ticket_id.in_(ids))).all())
    rows = [InboxRow(tickets[i], _unread(tickets[i], seen.get(i))) for i in ids]
    has_newer = (key is not None) if forward else more
    has_older = more if forward else True
    return InboxPage(rows, _cursor(rows[0].ticket, flt, priorities) if has_newer else None,
                     _cursor(rows[-1].ticket, flt, priorities) if has_older else None)


def inbox_counts(session: Session, *, agent_id: int, open_statuses: Sequence[str]
                 ) -> InboxCounts:
    """Every sidebar count from one grouped scan of a few indexed columns."""
    grouped = session.execute(
        select(Ticket.status, Ticket.queue_id, Ticket.assignee_id, func.count())
        .where(Ticket.merged_into_id.is_(None))
        .group_by(Ticket.status, Ticket.queue_id, Ticket.assignee_id))
    mine = unassigned = total_open = 0
    by_queue: dict[int, int] = {}
    by_status: dict[str, int] = {}
    for status, queue_id, assignee_id, count in grouped:
        by_status[status] = by_status.get(status, 0) + count
        if status in open_statuses:
            total_open += count
            by_queue[queue_id] = by_queue.get(queue_id, 0) + count
            mine += count if assignee_id == agent_id else 0
            unassigned += count if assignee_id is None else 0
    return InboxCounts(mine, unassigned, total_open, by_queue, by_status)


def newest_activity(session: Session) -> datetime | None:
    return session.scalar(select(func.max(Ticket.updated_at)))


def _filtered(session: Session, flt: InboxFilter) -> Select:
    query = select(Ticket.id).where(Ticket.merged_into_id.is_(None))
    if len(flt.statuses) == 1:
        query = query.where(Ticket.status == flt.statuses[0])
    elif flt.statuses:
        query = query.where(_unindexed(session, Ticket.status).in_(flt.statuses))
    if flt.priority:
        query = query.where(Ticket.priority == flt.priority)
    if flt.queue_id is not None:
        query = query.where(Ticket.queue_id == flt.queue_id)
    if flt.unassigned:
        query = query.where(Ticket.assignee_id.is_(None))
    elif flt.assignee_id is not None:
        query = query.where(Ticket.assignee_id == flt.assignee_id)
    if flt.tag:
        query = query.where(exists().where(
            TicketTag.ticket_id == Ticket.id, TicketTag.tag_id == Tag.id,
            Tag.name == flt.tag.strip().lower()))
    matching = ticket_matches(session, flt.text)
    if matching is not None:
        query = query.where(matching)
    return query


def _unindexed(session: Session, column: Any) -> Any:
    """SQLite: `+column`, which its planner may not look up by index. For several statuses,
    the (status, updated_at) index yields each status in order but not all of them together:
    SQLite would sort every open ticket for one page. Walking an index in updated_at order
    and skipping the other statuses stops after about a page."""
    if session.get_bind().dialect.name != "sqlite":
        return column
    return literal_column(f"+{column.table.name}.{column.name}", column.type)


def _keyset(session: Session, query: Select, key: tuple | None, forward: bool, limit: int, *,
            by_id: bool = False) -> list[int]:
    """Ids in (updated_at, id) order, or in id order (creation) when by_id."""
    column = Ticket.id if by_id else Ticket.updated_at
    if key is not None:
        moment, ticket_id = (None, key[-1]) if by_id else key[-2:]
        older = Ticket.id < ticket_id if forward else Ticket.id > ticket_id
        if not by_id:
            before = column < moment if forward else column > moment
            older = or_(before, and_(column == moment, older))
        query = query.where(older)
    order = (column.desc(), Ticket.id.desc()) if forward else (column.asc(), Ticket.id.asc())
    return list(session.scalars(query.order_by(*order[: 1 if by_id else 2]).limit(limit)))


def _by_priority(session: Session, query: Select, priorities: list[str], key: tuple | None,
                 forward: bool, limit: int) -> list[int]:
    """Most urgent first: one indexed (priority, updated_at) range per priority, walked in
    rank order until the page is full, instead of sorting every ticket by a CASE."""
    top = len(priorities) - 1
    if key is not None and not 0 <= key[0] <= top:
        key = None
    start = top if key is None else key[0]
    ranks = range(start, -1, -1) if forward else range(start, top + 1)
    found: list[int] = []
    for rank in ranks:
        within = query.where(Ticket.priority == priorities[rank])
        found += _keyset(session, within, key if key is not None and rank == key[0] else None,
                         forward, limit - len(found))
        if len(found) >= limit:
            break
    return found


def _cursor(ticket: Ticket, flt: InboxFilter, priorities: Sequence[str]) -> str:
    if flt.sort == "created":
        return str(ticket.id)
    parts = [ticket.updated_at.isoformat(), str(ticket.id)]
    if flt.sort == "priority":
        rank = priorities.index(ticket.priority) if ticket.priority in priorities else 0
        parts.insert(0, str(rank))
    return CURSOR_SEPARATOR.join(parts)


def _parse_cursor(cursor: str | None, sort: str) -> tuple | None:
    """The key a cursor names; a damaged or foreign cursor means the first page."""
    if not cursor:
        return None
    parts = cursor.split(CURSOR_SEPARATOR)
    try:
        if sort == "created" and len(parts) == 1:
            return (int(parts[0]),)
        if sort == "priority" and len(parts) == 3:
            return int(parts[0]), datetime.fromisoformat(parts[1]), int(parts[2])
        if sort == "updated" and len(parts) == 2:
            return datetime.fromisoformat(parts[0]), int(parts[1])
    except ValueError:
        pass
    return None


def _unread(ticket: Ticket, seen_at: datetime | None) -> bool:
    waiting = ticket.last_customer_at
    return waiting is not None and (seen_at is None or waiting > seen_at)
