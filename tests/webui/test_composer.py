"""The composer over HTTP on both databases: a reply becomes an outbound message and an outbox
row for the right people, once however often it is submitted, and not at all while news the
agent has not seen is waiting; failed delivery is shown with the relay's reason and retried."""

from __future__ import annotations

import io
import threading

from sqlalchemy import select

from models import outbox
from models.customer_mail import add_customer_message
from models.schema import Direction, Message, Outbox, OutboxState, Ticket
from models.tickets import add_note
from models.users import find_agent
from tests.models.factories import inbound
from tests.webui.conftest import AGENT, OTHER, Client, Instance, field, mail


def composer(client: Client, ticket_id: int) -> dict[str, str]:
    page = client.page(f"/tickets/{ticket_id}")
    return {"key": page.field("key"), "seen": page.field("seen")}


def replies(instance: Instance, ticket_id: int) -> list[tuple[Message, Outbox]]:
    with instance.runtime.sessions() as session:
        rows = session.execute(
            select(Message, Outbox).join(Outbox, Outbox.message_row_id == Message.id)
            .where(Message.ticket_id == ticket_id, Message.direction == Direction.OUTBOUND,
                   Outbox.kind == "reply").order_by(Message.id)).all()
        for message, _ in rows:
            _ = message.attachments
        return [tuple(row) for row in rows]


def test_a_reply_is_queued_for_the_requester_with_cc_attachment_and_status(
        instance: Instance) -> None:
    result = instance.deliver(mail("Need the contract", "Please send the signed contract.",
                                   cc=("Bob Lee <bob@shop.example>",)))
    client = instance.client(AGENT)
    form = composer(client, result.ticket)
    assert 'value="bob@shop.example"' in client.page(f"/tickets/{result.ticket}").html
    answer = client.post(f"/tickets/{result.ticket}/reply", {
        **form, "text": "Here it is.", "cc": ["bob@shop.example"], "send_pending": "1",
        "attachments": [(io.BytesIO(b"%PDF-1.4 contract"), "../contract.pdf",
                         "application/pdf")]}, status=302)
    [(message, row)] = replies(instance, result.ticket)
    assert answer.headers["Location"].endswith(f"/tickets/{result.ticket}#m{message.id}")
    assert row.recipients == ["anna@customer.example", "bob@shop.example"]
    assert row.state == OutboxState.QUEUED
    assert message.text == "Here it is." and message.cc == ["bob@shop.example"]
    assert [(a.filename, a.size) for a in message.attachments] == [("contract.pdf", 17)]
    assert instance.runtime.store.get(message.attachments[0].sha256) == b"%PDF-1.4 contract"
    with instance.runtime.sessions() as session:
        assert session.get(Ticket, result.ticket).status == "pending"
    page = client.page(f"/tickets/{result.ticket}").html
    assert "Reply queued for anna@customer.example, bob@shop.example." in page
    assert "Delivery: <strong>queued</strong>" in page


def test_a_double_submit_queues_the_reply_once(instance: Instance) -> None:
    result = instance.deliver(mail("Double click", "Hello?"))
    client = instance.client(AGENT)
    form = {**composer(client, result.ticket), "text": "Hello back.", "send": "1"}
    for _ in range(3):
        client.post(f"/tickets/{result.ticket}/reply", form, status=302)
    assert len(replies(instance, result.ticket)) == 1
    client.post(f"/tickets/{result.ticket}/reply", {**form, "text": ""}, status=400)
    client.post(f"/tickets/{result.ticket}/reply", {**form, "key": "not-a-key"}, status=400)


def test_a_reply_is_held_while_a_customer_message_waits_unseen(instance: Instance) -> None:
    first = instance.deliver(mail("Where is my parcel", "It did not arrive.",
                                  message_id="<parcel-1@customer.example>"))
    client = instance.client(AGENT)
    form = composer(client, first.ticket)
    instance.deliver(mail("Re: Where is my parcel", "Never mind, it just came!",
                          in_reply_to="<parcel-1@customer.example>"))
    def draft() -> dict:
        return {**form, "text": "We sent it again.", "send_solved": "1",
                "attachments": [(io.BytesIO(b"tracking 123"), "tracking.txt", "text/plain")]}

    held = client.post(f"/tickets/{first.ticket}/reply", draft(), status=409).get_data(
        as_text=True)
    assert "Not sent yet: 1 new message arrived while you were writing" in held
    assert "Never mind, it just came!" in held[held.index('class="hold"'):]
    assert "We sent it again." in held and "tracking.txt" in held
    assert replies(instance, first.ticket) == []
    client.post(f"/tickets/{first.ticket}/reply", draft(), status=409)  # the same stale form
    confirmed = {"key": form["key"], "text": "Glad it came!", "send_solved": "1",
                 "seen": field(held, "seen"), "held": field(held, "held")}
    assert int(confirmed["seen"]) > int(form["seen"])
    client.post(f"/tickets/{first.ticket}/reply", confirmed, status=302)
    [(message, row)] = replies(instance, first.ticket)
    assert message.text == "Glad it came!" and row.recipients == ["anna@customer.example"]
    assert [a.filename for a in message.attachments] == ["tracking.txt"]


def test_another_agents_reply_holds_a_send_but_notes_do_not(instance: Instance) -> None:
    result = instance.deliver(mail("Two agents", "Can someone help?"))
    bob, carol = instance.client(AGENT), instance.client(OTHER)
    bobs = composer(bob, result.ticket)
    with instance.runtime.sessions.begin() as session:
        add_note(session, session.get(Ticket, result.ticket), "Looking into it.",
                 agent=find_agent(session, OTHER))
    carols = composer(carol, result.ticket)
    carol.post(f"/tickets/{result.ticket}/reply", {**carols, "text": "On it.", "send": "1"},
               status=302)
    held = bob.post(f"/tickets/{result.ticket}/reply", {**bobs, "text": "Me too.", "send": "1"},
                    status=409).get_data(as_text=True)
    notice = held[held.index('class="hold"'):]
    notice = notice[:notice.index("</ul>")]
    assert "Carol Agent" in notice and "On it." in notice and "Looking into it." not in notice


def test_failed_delivery_shows_the_relays_reason_and_can_be_retried(instance: Instance) -> None:
    result = instance.deliver(mail("Bouncy", "Reply to me."))
    client = instance.client(AGENT)
    client.post(f"/tickets/{result.ticket}/reply",
                {**composer(client, result.ticket), "text": "Done.", "send": "1"}, status=302)
    [(_, row)] = replies(instance, result.ticket)
    with instance.runtime.sessions.begin() as session:
        outbox.fail(session, session.get(Outbox, row.id), "550 5.1.1 <anna@customer.example>: "
                    "no such user")
    page = client.page(f"/tickets/{result.ticket}").html
    assert "Delivery: <strong>failed</strong>" in page and "550 5.1.1" in page
    admin_page = instance.client("eve@example.com").page("/admin/").html
    assert f"/admin/outbox/{row.id}/retry" in admin_page and "550 5.1.1" in admin_page
    client.post(f"/tickets/{result.ticket}/deliveries/{row.id}/retry", status=302)
    with instance.runtime.sessions() as session:
        assert session.get(Outbox, row.id).state == OutboxState.QUEUED
    client.post(f"/tickets/{result.ticket + 1000}/deliveries/{row.id}/retry", status=404)



def test_a_customer_message_committing_during_the_send_still_holds_it(instance: Instance) -> None:
    """The check and the queueing happen under the ticket's lock: a customer message whose
    transaction is open while the agent presses Send is waited for, then seen."""
    result = instance.deliver(mail("Race", "First question."))
    client = instance.client(AGENT)
    form = {**composer(client, result.ticket), "text": "An answer.", "send": "1"}
    answers: list = []
    with instance.runtime.sessions.begin() as session:
        add_customer_message(session, session.get(Ticket, result.ticket),
                             inbound(text="Wait, one more thing.", subject="Re: Race"))
        session.flush()  # the ticket row is updated (locked) as ingest would
        sending = threading.Thread(target=lambda: answers.append(
            client.post(f"/tickets/{result.ticket}/reply", form)))
        sending.start()
        sending.join(timeout=1)
        assert sending.is_alive()  # the send waits for the customer's transaction
    sending.join(timeout=30)
    assert answers[0].status_code == 409
    assert "Wait, one more thing." in answers[0].get_data(as_text=True)
    assert replies(instance, result.ticket) == []
