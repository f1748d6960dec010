"""An agent's reply: Message and outbox row together, threaded, idempotent, on both databases."""

from __future__ import annotations

from sqlalchemy import func, select

from mailgateway.runtime import Runtime
from models.bounces import suppress
from models.customer_mail import add_customer_message, open_ticket
from models.events import EventKind
from models.replies import base_subject, queue_reply, references_after, reply_subject
from models.schema import Direction, Message, Outbox
from models.tickets import AttachmentDraft, get_ticket
from tests.models.factories import agent, default_queue, events, inbound


def test_subject_never_stacks_prefixes_or_tags() -> None:
    assert reply_subject("Invoice wrong", "ACME", 7) == "Re: Invoice wrong [ACME #7]"
    assert reply_subject("RE: AW: Fwd: Re: Invoice wrong [ACME #7]", "ACME", 7) == (
        "Re: Invoice wrong [ACME #7]")
    assert reply_subject("Re: [acme #7] Re: Invoice", "ACME", 7) == "Re: Invoice [ACME #7]"
    assert reply_subject("Antw: SV: 回复: Rechnung", "ACME", 2) == "Re: Rechnung [ACME #2]"
    assert reply_subject("", "ACME", 3) == "Re: [ACME #3]"
    assert base_subject("Invoice\r\nBcc: victim@example.org", "ACME") == (
        "Invoice Bcc: victim@example.org")
    assert reply_subject("Re: the Red sea", "ACME", 1) == "Re: the Red sea [ACME #1]"


def test_references_keep_the_root_and_the_last_ten() -> None:
    parent = Message(message_id="<p@x>", references=" ".join(f"<r{i}@x>" for i in range(15)))
    chain = references_after(parent).split()
    assert chain[0] == "<r0@x>" and chain[-1] == "<p@x>" and len(chain) == 11
    assert chain[1:] == [f"<r{i}@x>" for i in range(6, 15)] + ["<p@x>"]
    assert references_after(None) is None
    phone = Message(message_id="<p@x>", in_reply_to="<ours@y>")  # a client that drops References
    assert references_after(phone, "<root@x>") == "<root@x> <ours@y> <p@x>"
    assert references_after(parent, "<r3@x>").split() == chain  # the root already in the chain
    assert references_after(parent, "<p@x>").split() == chain


def test_reply_is_an_outbound_message_with_its_outbox_row(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, first = open_ticket(s, inbound(subject="Invoice wrong",
                                               message_id="<first@customer.example>"),
                                    queue=default_queue(s))
        add_customer_message(s, ticket, inbound(subject="Re: Invoice wrong",
                                                message_id="<second@customer.example>",
                                                references="<first@customer.example>"))
        reply = queue_reply(s, ticket, agent=smith, text="We refunded it.", tag="ACME",
                            cc=["Bob@Customer.Example"], status_after="pending",
                            attachments=[AttachmentDraft("r.pdf", "application/pdf", 3, "a" * 64)])
        ticket_id, reply_id = ticket.id, reply.id
    with runtime.sessions() as s:
        reply = s.get(Message, reply_id)
        assert reply.direction == Direction.OUTBOUND and reply.author_agent_id
        assert reply.subject == f"Re: Invoice wrong [ACME #{ticket_id}]"
        assert reply.in_reply_to == "<second@customer.example>"
        assert reply.references == "<first@customer.example> <second@customer.example>"
        assert reply.message_id == reply.dedup_key and reply.message_id.endswith("@example.com>")
        assert [a.filename for a in reply.attachments] == ["r.pdf"]
        [row] = s.scalars(select(Outbox))
        assert row.kind == "reply" and row.message_row_id == reply_id
        assert row.rfc_message_id == reply.message_id
        assert row.recipients == ["anna@customer.example", "bob@customer.example"]
        assert row.context["in_reply_to"] == "<second@customer.example>"
        ticket = get_ticket(s, ticket_id)
        assert ticket.status == "pending" and ticket.first_response_at
        assert len(events(s, ticket, EventKind.REPLY)) == 1


def test_the_same_submission_key_queues_one_reply(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound(), queue=default_queue(s))
        first = queue_reply(s, ticket, agent=smith, text="Once.", tag="ACME", submission_key="k1")
        again = queue_reply(s, ticket, agent=smith, text="Once.", tag="ACME", submission_key="k1")
        assert again.id == first.id
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1
        assert s.scalar(select(func.count()).select_from(Message).where(
            Message.direction == Direction.OUTBOUND)) == 1


def test_a_reply_to_a_suppressed_requester_still_goes_with_a_warning(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        smith = agent(s)
        ticket, _ = open_ticket(s, inbound("dead@customer.example"), queue=default_queue(s))
        suppress(s, "Dead@customer.example", days=7, reason="bounce: 5.1.1")
        reply = queue_reply(s, ticket, agent=smith, text="Anyone there?", tag="ACME")
        assert "dead@customer.example bounced recently" in reply.notes[0]
    with runtime.sessions() as s:
        assert s.scalar(select(Outbox.recipients)) == ["dead@customer.example"]
