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
    snippet_of,
    ticket_columns,
)


@dataclass
class Written:
    """One message handed to CustomerMail; its ids are known once `write` has run."""

    created: bool  # it opened its ticket
    ticket_id: int | None = None
    message_id: int | None = None


@dataclass
class _Row:
    """A row waiting for the ids of the ticket (and message) it belongs to."""

    of: Written
    columns: dict[str, object]
    draft: MessageDraft | None = None
    links_message: bool = False  # an event about the message itself


@dataclass
class CustomerMail:
    """A batch of customer mail, held as rows until `write`."""

    session: Session
    _tickets: list[_Row] = field(default_factory=list)
    _messages: list[_Row] = field(default_factory=list)
    _participants: list[_Row] = field(default_factory=list)
    _events: list[_Row] = field(default_factory=list)
    _joined: list[Ticket] = field(default_factory=list)  # existing tickets that got people

    def open_ticket(self, draft: MessageDraft, *, queue: Queue, priority: str = "normal",
                    cc: Sequence[tuple[str, str]] = ()) -> Written:
        """A new ticket from a customer's first message: the sender becomes its requester,
        the people copied its participants."""
        requester = contact_for(self.session, draft.from_address, draft.from_name)
        written = Written(created=True)
        columns = ticket_columns(subject=draft.subject, queue=queue, requester=requester,
                                 priority=priority, customer_activity=not draft.auto)
        columns.update(message_count=1, snippet="" if draft.auto else snippet_of(draft))
        self._tickets.append(_Row(written, columns))
        self._join(written, [requester], role="requester")
        self._event(written, EventKind.CREATED, requester, new=queue.name)
        self._message(written, draft, requester)
        self._join(written, self._people(cc), role="cc")
        return written

    def add(self, ticket: Ticket, draft: MessageDraft, *,
            cc: Sequence[tuple[str, str]] = ()) -> Written:
        """A customer's mail on an existing ticket: it reopens a pending or solved ticket,
        unless a robot wrote it: robots never change a ticket's state or its
        waiting-on-customer clock."""
        author = contact_for(self.session, draft.from_address, draft.from_name)
        written = Written(created=False, ticket_id=ticket.id)
        self._message(written, draft, author)
        count_message(ticket, draft)
        if draft.auto:
            self._event(written, EventKind.AUTO_MESSAGE, author, new=draft.auto,
                        links_message=True)
            return written
        ticket.last_customer_at = ticket.updated_at = utcnow()
        self._event(written, EventKind.CUSTOMER_MESSAGE, author, links_message=True)
        if ticket.status in REOPENED_BY_CUSTOMER:
            change_status_quietly(self.session, ticket, OPEN, actor=author)
        people = self._people(cc)
        if people:
            self._join(written, people, role="cc")
            self._joined.append(ticket)
        return written

    def write(self) -> None:
        """Every row held, one INSERT per table, and the session's own changes flushed;
        then each Written has its ids. The rows are let go first: a failure (a duplicate
        in a savepoint) leaves nothing of them behind to be written twice."""
        tickets, messages, people, events = (self._tickets, self._messages,
                                             self._participants, self._events)
        joined, self._joined = self._joined, []
        self._tickets, self._messages, self._participants, self._events = [], [], [], []
        with self.session.no_autoflush:
            for row, ticket_id in zip(tickets, self._insert(Ticket, tickets), strict=True):
                row.of.ticket_id = ticket_id
            for row, message_id in zip(messages, self._insert(Message, messages), strict=True):
                row.of.message_id = message_id
            self._rows(Attachment, [attachment_columns(a) | {"message_id": row.of.message_id}
                                    for row in messages for a in row.draft.attachments])
            self._participants_of(people)
            self._rows(Event, [row.columns | {"ticket_id": row.of.ticket_id, "message_row_id":
                                              row.of.message_id if row.links_message else None}
                               for row in events])
        for ticket in joined:  # a collection loaded before would miss the new people
            self.session.expire(ticket, ["participants"])
        self.session.flush()

    def _message(self, written: Written, draft: MessageDraft, author: Contact) -> None:
        self._messages.append(_Row(written, message_columns(draft, author), draft))

    def _people(self, cc: Sequence[tuple[str, str]]) -> list[Contact]:
        return [contact_for(self.session, address, name) for address, name in cc]

    def _join(self, written: Written, people: list[Contact], *, role: str) -> None:
        self._participants += [_Row(written, {"contact_id": p.id, "role": role})
                               for p in people]

    def _event(self, written: Written, kind: EventKind, actor: Contact, *, new: str | None = None,
               links_message: bool = False) -> None:
        self._events.append(_Row(written, {
            "kind": str(kind), "actor_agent_id": None, "actor_contact_id": actor.id, "old": None,
            "new": new, "created_at": utcnow()}, links_message=links_message))

    def _insert(self, table: type, rows: list[_Row]) -> list[int]:
        """The rows, with new ids handed out first (in the rows' order)."""
        ids = new_ids(self.session, table.__table__, len(rows))
        self._rows(table, [row.columns | {"id": new_id} | (
            {"ticket_id": row.of.ticket_id} if table is Message else {})
            for row, new_id in zip(rows, ids, strict=True)])
        return ids

    def _rows(self, table: type, rows: list[dict[str, object]]) -> None:
        if rows:
            self.session.execute(table.__table__.insert(), rows)

    def _participants_of(self, rows: list[_Row]) -> None:
        """Each person once per ticket, the first role kept (the requester before a Cc); one
        already on the ticket stays as they are."""
        wanted: dict[tuple[int, int], str] = {}
        for row in rows:
            wanted.setdefault((row.of.ticket_id, row.columns["contact_id"]), row.columns["role"])
        if wanted:
            self.session.execute(
                dialect_insert(self.session)(Participant.__table__).on_conflict_do_nothing(
                    index_elements=["ticket_id", "contact_id"]),
                [{"ticket_id": t, "contact_id": c, "role": r}
                 for (t, c), r in sorted(wanted.items())])


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
    written = mail.add(ticket, draft, cc=cc)
    mail.write()
    return session.get(Message, written.message_id)
