"""Tickets and their messages on both databases: each operation and the Event it records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from mailgateway.runtime import Runtime
from models.changes import change_status
from models.contacts import contact_for, fetch_contacts, find_contact
from models.customer_mail import CustomerMail, add_customer_message, open_ticket
from models.db import new_ids
from models.errors import NotFound
from models.events import EventKind
from models.schema import Contact, Direction, Message, utcnow
from models.tickets import AttachmentDraft, add_agent_reply, add_note, get_ticket
from tests.models.factories import agent, default_queue, events, inbound, outbound


def test_open_ticket_makes_requester_participants_and_created_event(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        draft = inbound("Anna@Customer.Example", subject="Invoice charged twice",
                        text="Charged twice.\n\n> old quote", reply_text="Charged   twice.",
                        attachments=[AttachmentDraft("invoice.pdf", "application/pdf", 3,
                                                     "a" * 64)])
        ticket, message = open_ticket(s, draft, queue=default_queue(s),
                                      cc=[("bob@customer.example", "Bob"),
                                          ("ANNA@customer.example", "")])
        ticket_id, message_id = ticket.id, message.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.subject == "Invoice charged twice"
        assert (ticket.status, ticket.priority, ticket.queue.name) == ("new", "normal", "Support")
        assert ticket.requester.email == "anna@customer.example"
        assert ticket.requester.name == "Anna Schmidt"
        assert [(p.contact.email, p.role) for p in ticket.participants] == [
            ("anna@customer.example", "requester"), ("bob@customer.example", "cc")]
        assert ticket.message_count == 1 and ticket.snippet == "Charged twice."
        assert ticket.last_customer_at is not None and ticket.first_response_at is None
        message = s.get(Message, message_id)
        assert message.ticket_id == ticket_id and message.direction == Direction.INBOUND
        assert message.author_contact_id == ticket.requester_id
        assert [(a.filename, a.size) for a in message.attachments] == [("invoice.pdf", 3)]
        [created] = events(s, ticket)
        assert created.kind == EventKind.CREATED
        assert created.actor_contact_id == ticket.requester_id and created.new == "Support"


def test_open_ticket_from_a_robot_starts_no_customer_clock(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        ticket, _ = open_ticket(s, inbound("mailer-daemon@customer.example", auto="bounce"),
                                queue=default_queue(s))
        assert ticket.last_customer_at is None and ticket.snippet == ""


@pytest.mark.parametrize("waiting", ["pending", "solved"])
def test_customer_message_reopens_a_waiting_ticket(runtime: Runtime, waiting: str) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_status(s, ticket, waiting, actor=smith)
        ticket.last_customer_at = before = datetime(2020, 1, 1)
        ticket_id = ticket.id

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, ticket_id)
        message = add_customer_message(s, ticket, inbound(reply_text="Still broken."),
                                       cc=[("carol@customer.example", "Carol")])
        message_row = message.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.status == "open" and ticket.solved_at is None
        assert ticket.last_customer_at > before
        assert ticket.message_count == 2 and ticket.snippet == "Still broken."
        assert "carol@customer.example" in {p.contact.email for p in ticket.participants}
        [said] = events(s, ticket, EventKind.CUSTOMER_MESSAGE)
        assert said.message_row_id == message_row and said.actor_contact_id == ticket.requester_id
        reopened = events(s, ticket, EventKind.STATUS)[-1]
        assert (reopened.old, reopened.new) == (waiting, "open")
        assert reopened.actor_contact_id == ticket.requester_id


def test_customer_message_leaves_an_open_ticket_open(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_status(s, ticket, "open", actor=smith)
        add_customer_message(s, ticket, inbound())
        assert ticket.status == "open"
        assert len(events(s, ticket, EventKind.STATUS)) == 1


def test_auto_message_changes_neither_status_nor_customer_clock(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(reply_text="Real question."), queue=default_queue(s))
        change_status(s, ticket, "pending", actor=smith)
        ticket.last_customer_at = before = datetime(2020, 1, 1)
        ticket_id = ticket.id

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, ticket_id)
        message = add_customer_message(
            s, ticket, inbound(auto="auto-reply", auto_reason="Auto-Submitted: auto-replied",
                               reply_text="I am out of the office."))
        message_row = message.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.status == "pending" and ticket.last_customer_at == before
        assert ticket.message_count == 2 and ticket.snippet == "Real question."
        assert events(s, ticket, EventKind.CUSTOMER_MESSAGE) == []
        [robot] = events(s, ticket, EventKind.AUTO_MESSAGE)
        assert robot.new == "auto-reply" and robot.message_row_id == message_row
        assert s.get(Message, message_row).auto == "auto-reply"
        assert [e.new for e in events(s, ticket, EventKind.STATUS)] == ["pending"]


def test_agent_reply_stops_first_response_clock_and_opens_a_new_ticket(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        assert ticket.status == "new"
        reply = add_agent_reply(s, ticket, outbound(), agent=smith)
        first = ticket.first_response_at
        ticket_id, reply_id, smith_id = ticket.id, reply.id, smith.id

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, ticket_id)
        add_agent_reply(s, ticket, outbound(), agent=s.get(type(smith), smith_id))

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert first is not None and ticket.first_response_at == first
        assert ticket.status == "open" and ticket.last_agent_at >= first
        assert ticket.message_count == 3
        [status] = events(s, ticket, EventKind.STATUS)
        assert (status.old, status.new, status.actor_agent_id) == ("new", "open", smith_id)
        replies = events(s, ticket, EventKind.REPLY)
        assert [r.actor_agent_id for r in replies] == [smith_id, smith_id]
        assert replies[0].message_row_id == reply_id
        message = s.get(Message, reply_id)
        assert message.direction == Direction.OUTBOUND and message.author_agent_id == smith_id


def test_note_is_recorded_without_touching_status_or_clocks(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(reply_text="Customer words."), queue=default_queue(s))
        note = add_note(s, ticket, "Refund approved by finance.", agent=smith)
        ticket_id, note_id, smith_id = ticket.id, note.id, smith.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.status == "new" and ticket.first_response_at is None
        assert ticket.last_agent_at is None and ticket.snippet == "Customer words."
        assert ticket.message_count == 2
        note = s.get(Message, note_id)
        assert note.direction == Direction.NOTE and note.text == "Refund approved by finance."
        assert note.author_agent_id == smith_id and note.message_id is None
        [recorded] = events(s, ticket, EventKind.NOTE)
        assert recorded.actor_agent_id == smith_id and recorded.message_row_id == note_id


def test_contact_for_is_case_insensitive_and_fills_a_blank_name(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        first = contact_for(s, "  Dana@Example.ORG ")
        again = contact_for(s, "dana@example.org", "Dana Scully")
        assert again is first and first.email == "dana@example.org"
        assert contact_for(s, "DANA@EXAMPLE.ORG", "Someone Else").name == "Dana Scully"

    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Contact)) == 1
        assert find_contact(s, "DaNa@example.org").name == "Dana Scully"


def test_a_batch_inserts_its_absent_contacts_and_keeps_a_row_already_there(
        runtime: Runtime) -> None:
    """fetch_contacts inserts the batch's new addresses at once; one that another delivery
    inserted first (on PostgreSQL a concurrent commit; here a plain INSERT) is kept as it
    is, not doubled and not renamed, and contact_for hands out the loaded rows."""
    with runtime.sessions.begin() as s:
        s.execute(insert(Contact).values(email="late@example.org", name="Late Larry",
                                         created_at=utcnow()))
        fetch_contacts(s, [("LATE@example.org", "Someone Else"), ("new@example.org", ""),
                           ("New@Example.org", "Nora New"), ("", "Nobody")])
        late = contact_for(s, "late@example.org")
        assert late.id is not None and late.name == "Late Larry"
        assert contact_for(s, "new@example.org").name == "Nora New"

    with runtime.sessions() as s:
        assert s.scalars(select(Contact.email).order_by(Contact.email)).all() == [
            "late@example.org", "new@example.org"]


def test_dedup_key_refuses_a_second_message_and_the_transaction_goes_on(
        runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(message_id="<same@customer.example>"),
                                queue=default_queue(s))
        with pytest.raises(IntegrityError), s.begin_nested():
            add_customer_message(s, ticket, inbound(message_id="<same@customer.example>"))
        add_note(s, ticket, "The outer transaction still works.", agent=smith)
        ticket_id = ticket.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        keys = list(s.scalars(select(Message.dedup_key).where(Message.ticket_id == ticket_id)))
        assert keys.count("<same@customer.example>") == 1 and len(keys) == 2
        assert ticket.message_count == 2
        assert events(s, ticket, EventKind.CUSTOMER_MESSAGE) == []
        assert len(events(s, ticket, EventKind.NOTE)) == 1


def test_a_sent_date_with_an_offset_is_stored_as_utc_on_every_database(
        runtime: Runtime) -> None:
    """Regression: an aware Date header was stored as its local wall clock on SQLite but
    converted by the server's time zone on PostgreSQL; both now keep naive UTC."""
    sent = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    with runtime.sessions.begin() as s:
        _, message = open_ticket(s, inbound(sent_at=sent), queue=default_queue(s))
        message_id = message.id
    with runtime.sessions() as s:
        stored = s.get(Message, message_id).sent_at
        assert stored == sent.astimezone(UTC).replace(tzinfo=None)


def test_get_ticket_of_a_missing_id_is_not_found(runtime: Runtime) -> None:
    with runtime.sessions() as s, pytest.raises(NotFound, match="no ticket #999"):
        get_ticket(s, 999)


def test_a_batch_adds_mail_to_a_ticket_it_opened_before_any_row_is_written(
        runtime: Runtime) -> None:
    """CustomerMail hands out ids at once and writes rows at the end: a reply later in the
    batch goes onto the ticket its first mail opened, and the rows come out as if each
    message had been stored alone."""
    with runtime.sessions.begin() as s:
        mail = CustomerMail(s)
        first = mail.open_ticket(inbound(cc=["bob@customer.example"]), queue=default_queue(s),
                                 cc=[("bob@customer.example", "Bob")])
        reply = mail.add(first.ticket_id, inbound("bob@customer.example",
                                                  reply_text="Same here."),
                         cc=[("anna@customer.example", "")])
        assert s.scalar(select(func.count()).select_from(Message)) == 0  # nothing written yet
        mail.write()
        assert (first.created, reply.created) == (True, False)
        assert reply.ticket_id == first.ticket_id and reply.message_id > first.message_id

    with runtime.sessions() as s:
        ticket = get_ticket(s, first.ticket_id)
        assert ticket.message_count == 2 and ticket.snippet == "Same here."
        assert [(p.contact.email, p.role) for p in ticket.participants] == [
            ("anna@customer.example", "requester"), ("bob@customer.example", "cc")]
        assert [(e.kind, e.message_row_id) for e in events(s, ticket)] == [
            (EventKind.CREATED, None), (EventKind.CUSTOMER_MESSAGE, reply.message_id)]
        assert s.get(Message, reply.message_id).author_contact_id == find_contact(
            s, "bob@customer.example").id


def test_ids_handed_out_are_never_given_again_in_the_session_nor_to_an_object(
        runtime: Runtime) -> None:
    """An id a rolled-back savepoint had is not handed out again (the session may still hold
    an object loaded for it), and a message added as an object after ids were handed out
    takes a later one, not the database's own choice of the next free id."""
    with runtime.sessions.begin() as s:
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        (kept,) = new_ids(s, Message.__table__, 1)
        with s.begin_nested() as savepoint:
            (dropped,) = new_ids(s, Message.__table__, 1)
            savepoint.rollback()
        (after,) = new_ids(s, Message.__table__, 1)
        assert kept < dropped < after
        note = add_note(s, ticket, "Object, not row.", agent=agent(s))
        assert note.id > after
        mail = CustomerMail(s)
        reply = mail.add(ticket.id, inbound())
        mail.write()
        assert reply.message_id > note.id
        assert s.get(Message, reply.message_id).ticket_id == ticket.id
