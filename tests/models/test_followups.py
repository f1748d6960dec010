"""Acknowledgements and agents' notices: who gets one, who never does, on both databases."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select

from mailgateway.runtime import Runtime
from models.bounces import suppress
from models.changes import assign
from models.customer_mail import add_customer_message, open_ticket
from models.followups import FollowupPolicy, after_assignment, after_customer_message
from models.schema import Direction, Message, Outbox, utcnow
from tests.models.factories import agent, default_queue, inbound

POLICY = FollowupPolicy(
    tag="ACME", acknowledged_queues=frozenset({"Support"}), max_acks_per_sender_per_hour=3,
    noreply_patterns=("noreply@*", "*@noreply.*"), our_addresses=frozenset({"support@example.com"}),
    ticket_url="https://help.example.com/tickets/{id}",
)


def new_ticket(runtime: Runtime, sender: str = "anna@customer.example", policy=POLICY, **fields):
    """A customer opens a ticket; returns the outbox rows and skip reasons it set off."""
    with runtime.sessions.begin() as s:
        ticket, message = open_ticket(s, inbound(sender, **fields), queue=default_queue(s))
        done = after_customer_message(s, ticket, message, created=True, policy=policy)
        return ticket.id, [(r.kind, r.recipients) for r in done.queued], done.skipped


def test_a_new_ticket_is_acknowledged_and_every_active_agent_told(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        agent(s, "one@example.com")
        agent(s, "two@example.com").active = False
    ticket_id, queued, skipped = new_ticket(runtime, subject="Invoice wrong",
                                            message_id="<new@customer.example>")
    assert queued == [("acknowledgement", ["anna@customer.example"]),
                      ("notification", ["one@example.com"])]
    assert skipped == []
    with runtime.sessions() as s:
        ack = s.scalar(select(Outbox).where(Outbox.kind == "acknowledgement"))
        assert ack.context["auto"] == "auto-replied"
        assert ack.context["subject"] == f"Re: Invoice wrong [ACME #{ticket_id}]"
        assert ack.context["in_reply_to"] == "<new@customer.example>"
        assert ack.context["values"]["ticket_id"] == ticket_id
        stored = s.get(Message, ack.message_row_id)  # on the ticket, so a reply to it threads
        assert stored.direction == Direction.OUTBOUND and stored.message_id == ack.rfc_message_id
        assert stored.auto == "acknowledgement"
        notice = s.scalar(select(Outbox).where(Outbox.kind == "notification"))
        assert notice.context["auto"] == "auto-generated"
        assert notice.context["values"]["url"] == f"https://help.example.com/tickets/{ticket_id}"


@pytest.mark.parametrize(("sender", "fields", "policy", "why"), [
    ("anna@customer.example", {"auto": "auto-reply"}, POLICY, "automatic"),
    ("support@example.com", {}, POLICY, "one of our addresses"),
    ("support+t1-abcdefghij@example.com", {}, POLICY, "one of our addresses"),
    ("NoReply@shop.example", {}, POLICY, "no-reply pattern"),
    ("", {}, POLICY, "names no sender"),  # found by QA: an acknowledgement to "" that failed
    ("orders@noreply.shop.example", {}, POLICY, "no-reply pattern"),
    ("anna@customer.example", {}, dataclasses.replace(POLICY, acknowledge=False), "switched off"),
    ("anna@customer.example", {}, dataclasses.replace(POLICY, acknowledged_queues=frozenset()),
     "does not acknowledge"),
])
def test_no_acknowledgement_where_it_could_loop_or_is_unwanted(
        runtime: Runtime, sender: str, fields: dict, policy: FollowupPolicy, why: str) -> None:
    _, queued, skipped = new_ticket(runtime, sender, policy=policy, **fields)
    assert "acknowledgement" not in [kind for kind, _ in queued]
    assert any(why in reason for reason in skipped), skipped


def test_no_acknowledgement_to_a_suppressed_address(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        suppress(s, "anna@customer.example", days=7, reason="bounce")
    _, queued, skipped = new_ticket(runtime)
    assert queued == [] and "suppressed until" in skipped[0]


def test_at_most_n_acknowledgements_an_hour_to_one_sender(runtime: Runtime) -> None:
    acked = [bool(new_ticket(runtime, "robot@elsewhere.example")[1]) for _ in range(5)]
    assert acked == [True, True, True, False, False]
    assert new_ticket(runtime, "human@elsewhere.example")[1]  # others are not affected
    later = dataclasses.replace(POLICY, now=lambda: utcnow() + timedelta(minutes=61))
    assert new_ticket(runtime, "robot@elsewhere.example", policy=later)[1]


def test_a_customer_reply_tells_the_assignee_only(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        owner, other = agent(s, "owner@example.com"), agent(s, "other@example.com")
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        unassigned = after_customer_message(s, ticket, add_customer_message(s, ticket, inbound()),
                                            created=False, policy=POLICY)
        assert unassigned.queued == []
        assign(s, ticket, owner, actor=other)
        message = add_customer_message(s, ticket, inbound(text="More detail."))
        done = after_customer_message(s, ticket, message, created=False, policy=POLICY)
        assert [(r.kind, r.recipients) for r in done.queued] == [
            ("notification", ["owner@example.com"])]
        assert done.queued[0].context["template"] == "notification_customer_reply"
        off = dataclasses.replace(POLICY, notify_customer_reply=False)
        assert after_customer_message(s, ticket, message, created=False, policy=off).queued == []


def test_assignment_tells_the_assignee_unless_they_took_it_themselves(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        owner, boss = agent(s, "owner@example.com"), agent(s, "boss@example.com")
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        done = after_assignment(s, ticket, assign(s, ticket, owner, actor=boss), actor=boss,
                                policy=POLICY)
        assert [(r.kind, r.recipients) for r in done.queued] == [
            ("notification", ["owner@example.com"])]
        assert done.queued[0].context["values"]["by"] == "Agent Smith"
        mine = after_assignment(s, ticket, assign(s, ticket, boss, actor=boss), actor=boss,
                                policy=POLICY)
        assert mine.queued == []
        off = dataclasses.replace(POLICY, notify_assigned=False)
        assert after_assignment(s, ticket, assign(s, ticket, owner, actor=boss), actor=boss,
                                policy=off).queued == []
