"""Changes agents make to tickets, on both databases: each one and the Event it records."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailgateway.runtime import Runtime
from models.changes import (
    assign,
    change_priority,
    change_queue,
    change_status,
    merge,
    move_message,
    set_tags,
    split_message,
)
from models.customer_mail import add_customer_message, open_ticket
from models.errors import Conflict
from models.events import EventKind
from models.queues import sync_queues
from models.schema import Agent, Message, Tag, TicketTag
from models.tickets import get_ticket
from tests.models.factories import agent, default_queue, events, inbound


def test_change_status_sets_and_clears_solved_and_closed_times(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_status(s, ticket, "solved", actor=smith)
        solved_at = ticket.solved_at
        assert solved_at is not None and ticket.closed_at is None
        change_status(s, ticket, "closed", actor=smith)
        assert ticket.solved_at == solved_at and ticket.closed_at is not None
        change_status(s, ticket, "closed", actor=smith)  # no change, no Event
        ticket_id, smith_id = ticket.id, smith.id

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, ticket_id)
        change_status(s, ticket, "open", actor=s.get(Agent, smith_id))

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.status == "open" and ticket.solved_at is None and ticket.closed_at is None
        changes = events(s, ticket, EventKind.STATUS)
        assert [(e.old, e.new) for e in changes] == [
            ("new", "solved"), ("solved", "closed"), ("closed", "open")]
        assert {e.actor_agent_id for e in changes} == {smith_id}


def test_change_priority_records_old_and_new(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_priority(s, ticket, "urgent", actor=smith)
        change_priority(s, ticket, "urgent", actor=smith)
        ticket_id, smith_id = ticket.id, smith.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.priority == "urgent"
        [event] = events(s, ticket, EventKind.PRIORITY)
        assert (event.old, event.new, event.actor_agent_id) == ("normal", "urgent", smith_id)


def test_assign_and_unassign(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        boss, smith = agent(s, "boss@example.com"), agent(s, "smith@example.com")
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        assigned = assign(s, ticket, smith, actor=boss)
        assert assigned is not None and assigned.kind == EventKind.ASSIGNED
        assert assign(s, ticket, smith, actor=boss) is None  # already theirs: no Event
        ticket_id, boss_id = ticket.id, boss.id

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.assignee.email == "smith@example.com"
        assert assign(s, ticket, None, actor=s.get(Agent, boss_id)) is not None
        assert assign(s, ticket, None, actor=s.get(Agent, boss_id)) is None

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.assignee is None and ticket.assignee_id is None
        history = events(s, ticket, EventKind.ASSIGNED)
        assert [(e.old, e.new) for e in history] == [
            (None, "smith@example.com"), ("smith@example.com", None)]
        assert {e.actor_agent_id for e in history} == {boss_id}


def test_change_queue(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        billing = sync_queues(s, [("Support", "support@example.com"),
                                  ("Billing", "Billing@Example.com")])["Billing"]
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_queue(s, ticket, billing, actor=smith)
        change_queue(s, ticket, billing, actor=smith)
        ticket_id = ticket.id

    with runtime.sessions() as s:
        ticket = get_ticket(s, ticket_id)
        assert ticket.queue.name == "Billing" and ticket.queue.address == "billing@example.com"
        [event] = events(s, ticket, EventKind.QUEUE)
        assert (event.old, event.new) == ("Support", "Billing")


def test_set_tags_normalises_and_shares_tag_rows(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        first, _ = open_ticket(s, inbound(), queue=default_queue(s))
        second, _ = open_ticket(s, inbound("bob@shop.example"), queue=default_queue(s))
        set_tags(s, first, [" VIP", "billing", "vip", "  "], actor=smith)
        ids = (first.id, second.id)

    with runtime.sessions.begin() as s:
        first, second = (get_ticket(s, i) for i in ids)
        smith = s.scalar(select(Agent))
        set_tags(s, second, ["Vip", "Refund"], actor=smith)
        set_tags(s, first, ["billing", "VIP"], actor=smith)  # same set: no Event

    with runtime.sessions() as s:
        first, second = (get_ticket(s, i) for i in ids)
        assert [t.name for t in first.tags] == ["billing", "vip"]
        assert [t.name for t in second.tags] == ["refund", "vip"]
        assert sorted(s.scalars(select(Tag.name))) == ["billing", "refund", "vip"]
        assert s.scalar(select(func.count()).select_from(TicketTag)) == 4
        [tagged] = events(s, first, EventKind.TAGS)
        assert (tagged.old, tagged.new) == ("", "billing,vip")
        [tagged] = events(s, second, EventKind.TAGS)
        assert (tagged.old, tagged.new) == ("", "refund,vip")

    with runtime.sessions.begin() as s:
        first = get_ticket(s, ids[0])
        set_tags(s, first, [], actor=s.scalar(select(Agent)))
    with runtime.sessions() as s:
        first = get_ticket(s, ids[0])
        assert first.tags == [] and events(s, first, EventKind.TAGS)[-1].new == ""


def test_merge_moves_messages_and_people_and_closes_the_source(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        queue = default_queue(s)
        source, first = open_ticket(s, inbound("anna@customer.example"), queue=queue,
                                    cc=[("bob@customer.example", "Bob")])
        second = add_customer_message(s, source, inbound("anna@customer.example"))
        target, kept = open_ticket(s, inbound("dan@customer.example"), queue=queue)
        merge(s, source, target, actor=smith)
        assert first.ticket_id == target.id  # the session's copies follow the rows
        ids = (source.id, target.id, first.id, second.id, kept.id, smith.id)

    source_id, target_id, *message_ids, smith_id = ids
    with runtime.sessions() as s:
        source, target = get_ticket(s, source_id), get_ticket(s, target_id)
        on_target = set(s.scalars(select(Message.id).where(Message.ticket_id == target_id)))
        assert on_target == set(message_ids)
        assert (target.message_count, source.message_count) == (3, 0)
        assert target.participants[0].contact.email == "dan@customer.example"
        assert sorted((p.contact.email, p.role) for p in target.participants) == [
            ("anna@customer.example", "cc"), ("bob@customer.example", "cc"),
            ("dan@customer.example", "requester")]
        assert source.merged_into_id == target_id and source.status == "closed"
        assert source.closed_at is not None and target.merged_into_id is None
        assert get_ticket(s, source_id, follow_merge=True).id == target_id
        [merged] = events(s, target, EventKind.MERGED)
        assert (merged.new, merged.actor_agent_id) == (f"#{source_id}", smith_id)
        [into] = events(s, source, EventKind.MERGED_INTO)
        assert (into.new, into.actor_agent_id) == (f"#{target_id}", smith_id)
        assert events(s, source, EventKind.STATUS)[-1].new == "closed"


def test_merge_refuses_itself_and_a_merged_target(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        one, _ = open_ticket(s, inbound(), queue=default_queue(s))
        two, _ = open_ticket(s, inbound(), queue=default_queue(s))
        three, _ = open_ticket(s, inbound(), queue=default_queue(s))
        with pytest.raises(Conflict, match="itself"):
            merge(s, one, one, actor=smith)
        assert one.merged_into_id is None and events(s, one, EventKind.MERGED) == []
        merge(s, two, three, actor=smith)
        with pytest.raises(Conflict, match="was itself merged"):
            merge(s, one, two, actor=smith)
        assert one.merged_into_id is None and one.message_count == 1


def test_move_message_between_tickets(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        source, _ = open_ticket(s, inbound(), queue=default_queue(s))
        stray = add_customer_message(s, source, inbound())
        target, _ = open_ticket(s, inbound("bob@shop.example"), queue=default_queue(s))
        move_message(s, stray, target, actor=smith)
        with pytest.raises(Conflict):
            move_message(s, stray, target, actor=smith)
        ids = (source.id, target.id, stray.id)

    source_id, target_id, stray_id = ids
    with runtime.sessions() as s:
        source, target = get_ticket(s, source_id), get_ticket(s, target_id)
        assert s.get(Message, stray_id).ticket_id == target_id
        assert (source.message_count, target.message_count) == (1, 2)
        [out] = events(s, source, EventKind.MESSAGE_MOVED)
        [came] = events(s, target, EventKind.MESSAGE_MOVED)
        assert (out.new, out.message_row_id) == (f"to #{target_id}", stray_id)
        assert (came.new, came.message_row_id) == (f"from #{source_id}", stray_id)


def test_split_message_makes_a_ticket_of_its_own(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        source, _ = open_ticket(s, inbound(), queue=default_queue(s))
        change_priority(s, source, "high", actor=smith)
        other = add_customer_message(
            s, source, inbound("Carol@Customer.Example", from_name="Carol",
                               subject="Also: my address changed"))
        split = split_message(s, other, default_queue(s), actor=smith)
        ids = (source.id, split.id, other.id, smith.id)

    source_id, split_id, other_id, smith_id = ids
    with runtime.sessions() as s:
        source, split = get_ticket(s, source_id), get_ticket(s, split_id)
        assert split.id != source_id and split.subject == "Also: my address changed"
        assert split.requester.email == "carol@customer.example"
        assert (split.status, split.priority, split.queue.name) == ("new", "high", "Support")
        assert s.get(Message, other_id).ticket_id == split_id
        assert (source.message_count, split.message_count) == (1, 1)
        kinds = [e.kind for e in events(s, split)]
        assert kinds == [EventKind.CREATED, EventKind.MESSAGE_MOVED, EventKind.SPLIT]
        [made] = events(s, split, EventKind.SPLIT)
        assert (made.old, made.actor_agent_id) == (f"#{source_id}", smith_id)
        [out] = events(s, source, EventKind.MESSAGE_MOVED)
        assert out.new == f"to #{split_id}"
