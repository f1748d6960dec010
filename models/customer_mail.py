"""A customer's mail on a ticket: open a ticket with it, or add it to one.

Written as rows, a batch at a time: the ingest path stores hundreds of messages a second,
and ORM objects for every message, ticket, participant and event (instrumented attributes,
the unit of work's bookkeeping) cost it more than the rows themselves. CustomerMail collects
a batch and writes it with one INSERT per table; open_ticket and add_customer_message are
its one-message forms, for callers that want the objects back.

A ticket that mail is added to is the session's object: its state (status, counts, clocks)
changes on it, where the rest of the session sees it, and reaches the database with the
session's flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from models.contacts import contact_for
from models.db import dialect_insert, new_ids
from models.events import EventKind
from models.schema import Attachment, Contact, Event, Message, Participant, Queue, Ticket, utcnow
from models.tickets import (
    OPEN,
    REOPENED_BY_CUSTOMER,
    MessageDraft,
    attachment_columns,
    change_status_quietly,
    count_message,
    get_ticket,
    message_columns,
    ticket_columns,
)


@dataclass(frozen=True)
class Written:
    """One message handed to CustomerMail: its ids are handed out at once, its rows
    inserted by `write`."""

    ticket_id: int
    message_id: int
    created: bool  # it opened its ticket


@dataclass
class CustomerMail:
    """A batch of customer mail, held as rows until `write`. A ticket it opens is a plain
    object outside the session until then, so later mail of the batch can be added to it."""

    session: Session
    expected: int = 1  # messages it will hold at most: PostgreSQL fetches their ids at once
    _new: dict[int, Ticket] = field(default_factory=dict)  # tickets opened, by id
    _messages: list[tuple[dict[str, object], MessageDraft]] = field(default_factory=list)
    _people: dict[tuple[int, int], str] = field(default_factory=dict)  # (ticket, contact): role
    _events: list[dict[str, object]] = field(default_factory=list)
    _joined: list[Ticket] = field(default_factory=list)  # existing tickets that got people

    def open_ticket(self, draft: MessageDraft, *, queue: Queue, priority: str = "normal",
                    cc: Sequence[tuple[str, str]] = ()) -> Written:
        """A new ticket from a customer's first message: the sender becomes its requester,
        the people copied its participants."""
        requester = contact_for(self.session, draft.from_address, draft.from_name)
        (ticket_id,) = new_ids(self.session, Ticket.__table__, 1)
        ticket = Ticket(id=ticket_id, **ticket_columns(
            subject=draft.subject, queue=queue, requester=requester, priority=priority,
            customer_activity=not draft.auto))
        self._new[ticket_id] = ticket
        self._join(ticket, [requester], role="requester")
        self._event(ticket_id, EventKind.CREATED, requester, new=queue.name)
        written = self._message(ticket, draft, requester, created=True)
        self._join(ticket, self._contacts(cc), role="cc")
        return written

    def add(self, ticket_id: int, draft: MessageDraft, *,
            cc: Sequence[tuple[str, str]] = ()) -> Written:
        """A customer's mail on an existing ticket (or one this batch opened): it reopens a
        pending or solved ticket, unless a robot wrote it: robots never change a ticket's
        state or its waiting-on-customer clock."""
        ticket = self._new.get(ticket_id) or get_ticket(self.session, ticket_id)
        author = contact_for(self.session, draft.from_address, draft.from_name)
        written = self._message(ticket, draft, author, created=False)
        if draft.auto:
            self._event(ticket_id, EventKind.AUTO_MESSAGE, author, new=draft.auto,
                        message_id=written.message_id)
            return written
        ticket.last_customer_at = ticket.updated_at = utcnow()
        self._event(ticket_id, EventKind.CUSTOMER_MESSAGE, author, message_id=written.message_id)
        if ticket.status in REOPENED_BY_CUSTOMER:  # (never one this batch opened: it is new)
            change_status_quietly(self.session, ticket, OPEN, actor=author)
        self._join(ticket, self._contacts(cc), role="cc")
        return written

    def write(self) -> None:
        """Every row held, one INSERT per table, and the session's own changes flushed.
        The rows are let go first: a failure (a duplicate, in a savepoint) leaves nothing
        of them behind to be written twice."""
        tickets, messages, people, events, joined = (
            list(self._new.values()), self._messages, self._people, self._events, self._joined)
        self._new, self._messages, self._people, self._events, self._joined = {}, [], {}, [], []
        with self.session.no_autoflush:
            self._rows(Ticket, [{c.key: getattr(t, c.key) for c in Ticket.__table__.columns}
                                for t in tickets])
            self._rows(Message, [columns for columns, _ in messages])
            self._rows(Attachment, [attachment_columns(a) | {"message_id": columns["id"]}
                                    for columns, draft in messages for a in draft.attachments])
            if people:  # sorted: two PostgreSQL writers take the rows' locks in one order
                self.session.execute(
                    dialect_insert(self.session)(Participant.__table__).on_conflict_do_nothing(
                        index_elements=["ticket_id", "contact_id"]),
                    [{"ticket_id": t, "contact_id": c, "role": r}
                     for (t, c), r in sorted(people.items())])
            self._rows(Event, events)
        for ticket in joined:  # a collection loaded before would miss the new people
            self.session.expire(ticket, ["participants"])
        self.session.flush()

    def _message(self, ticket: Ticket, draft: MessageDraft, author: Contact, *, created: bool
                 ) -> Written:
        (message_id,) = new_ids(self.session, Message.__table__, 1, ahead=self.expected - 1)
        self._messages.append((message_columns(draft, author) | {
            "id": message_id, "ticket_id": ticket.id}, draft))
        count_message(ticket, draft)
        return Written(ticket.id, message_id, created)

    def _contacts(self, cc: Sequence[tuple[str, str]]) -> list[Contact]:
        return [contact_for(self.session, address, name) for address, name in cc]

    def _join(self, ticket: Ticket, people: list[Contact], *, role: str) -> None:
        """Each person once per ticket, the first role kept (the requester before a Cc); one
        already on the ticket stays as they are."""
        for person in people:
            self._people.setdefault((ticket.id, person.id), role)
        if people and ticket.id not in self._new:
            self._joined.append(ticket)

    def _event(self, ticket_id: int, kind: EventKind, actor: Contact, *,
               new: str | None = None, message_id: int | None = None) -> None:
        self._events.append({
            "ticket_id": ticket_id, "kind": str(kind), "actor_agent_id": None,
            "actor_contact_id": actor.id, "old": None, "new": new,
            "message_row_id": message_id, "created_at": utcnow()})

    def _rows(self, table: type, rows: list[dict[str, object]]) -> None:
        if rows:
            self.session.execute(table.__table__.insert(), rows)


def open_ticket(session: Session, draft: MessageDraft, *, queue: Queue,
                priority: str = "normal", cc: Sequence[tuple[str, str]] = ()
                ) -> tuple[Ticket, Message]:
    """One customer's mail opening a ticket, written at once."""
    mail = CustomerMail(session)
    written = mail.open_ticket(draft, queue=queue, priority=priority, cc=cc)
    mail.write()
    return get_ticket(session, written.ticket_id), session.get(Message, written.message_id)


def add_customer_message(session: Session, ticket: Ticket, draft: MessageDraft, *,
                         cc: Sequence[tuple[str, str]] = ()) -> Message:
    """One customer's mail on an existing ticket, written at once."""
    mail = CustomerMail(session)
    written = mail.add(ticket.id, draft, cc=cc)
    mail.write()
    return session.get(Message, written.message_id)
