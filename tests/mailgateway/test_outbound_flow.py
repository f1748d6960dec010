"""End to end through ingest.receive() and a real relay: acknowledgement, reply and answer
all on one ticket; auto-responders that stop at the limit; a DSN to one mail's VERP address;
Outlook's Thread-Index on our reply."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailgateway.ingest import IngestResult, Source, receive
from mailgateway.reply_token import bounce_address, outbox_from_bounce_address, ticket_from_address
from mailgateway.runtime import Runtime
from mailgateway.sender import Sender
from models.bounces import suppressed_until
from models.events import EventKind
from models.replies import queue_reply
from models.schema import Direction, Message, Outbox, OutboxState, Ticket, utcnow
from models.tickets import get_ticket
from models.users import add_agent, find_agent
from tests.mailgateway.relay import Delivery, Relay, gateway, running
from tests.models.factories import events

SUPPORT = "support@example.com"
Wired = tuple[Relay, Runtime, Sender]


def customer_mail(sender: str, subject: str, text: str, *, message_id: str | None = None,
                  to: str = SUPPORT, **headers: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(utcnow().replace(tzinfo=None))
    mail["Message-ID"] = message_id or make_msgid(domain="customer.test")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(text)
    return mail.as_bytes()


@pytest.fixture
def wired(tmp_path: Path, database_url: str) -> Iterator[Wired]:
    """A gateway whose relay is a real SMTP server in this test, and its sender."""
    relay = Relay()
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        yield relay, runtime, Sender(runtime)


def deliver(runtime: Runtime, data: bytes, *recipients: str) -> IngestResult:
    return receive(runtime, data, Source("smtp", "test", recipients or (SUPPORT,)))


def test_acknowledgement_reply_and_answers_all_thread_on_one_ticket(wired: Wired) -> None:
    relay, runtime, sender = wired
    secret = runtime.settings.secret_key
    with runtime.sessions.begin() as s:
        add_agent(s, "agent@example.com", name="Fox", password="a-long-password",
                  must_change_password=False)
    opened = deliver(runtime, customer_mail("Dana <dana@customer.test>", "Invoice wrong",
                                            "My invoice is wrong.",
                                            message_id="<first@customer.test>"))
    assert opened.action == "created"
    assert sender.send_due().sent == 2  # the acknowledgement and the agent's notice
    ack = only(relay.delivered, "dana@customer.test")
    notice = only(relay.delivered, "agent@example.com")
    a = ack.mail
    assert a["In-Reply-To"] == "<first@customer.test>"
    assert a["Auto-Submitted"] == "auto-replied"
    assert a["Subject"] == f"Re: Invoice wrong [ACME #{opened.ticket}]"
    assert ticket_from_address(a["Reply-To"].addresses[0].addr_spec, secret) == opened.ticket
    assert outbox_from_bounce_address(ack.envelope_from, secret) is not None
    assert f"ticket #{opened.ticket}" in a.get_body(("plain",)).get_content()
    assert notice.mail["Auto-Submitted"] == "auto-generated"

    # the customer answers the acknowledgement with only In-Reply-To (no tag)
    answered_ack = deliver(runtime, customer_mail(
        "dana@customer.test", "Re: Invoice wrong", "Invoice 2024-17.",
        message_id="<ack-answer@customer.test>", In_Reply_To=a["Message-ID"]))
    assert (answered_ack.action, answered_ack.ticket) == ("appended", opened.ticket)

    with runtime.sessions.begin() as s:
        ticket = get_ticket(s, opened.ticket)
        queue_reply(s, ticket, agent=find_agent(s, "agent@example.com"),
                    text="Corrected, sorry!", tag="ACME")
    assert sender.send_due().sent == 1
    r = only(relay.delivered, "dana@customer.test", last=True).mail
    assert r["In-Reply-To"] == "<ack-answer@customer.test>"
    assert "<first@customer.test>" in r["References"].split()
    assert r["References"].split()[-1] == "<ack-answer@customer.test>"
    assert r["Subject"] == f"Re: Invoice wrong [ACME #{opened.ticket}]"
    assert r["Auto-Submitted"] is None
    assert r.get_body(("plain",)).get_content().strip() == "Corrected, sorry!"

    # ... and answers the reply from a phone: a new subject, only In-Reply-To, to Reply-To
    answer = deliver(runtime, customer_mail(
        "dana@customer.test", "thanks", "Thank you!", to=r["Reply-To"],
        message_id="<thanks@customer.test>", In_Reply_To=r["Message-ID"]))
    assert (answer.action, answer.ticket) == ("appended", opened.ticket)
    with runtime.sessions() as s:
        inbound = s.scalars(select(Message.message_id).where(
            Message.ticket_id == opened.ticket, Message.direction == Direction.INBOUND)
            .order_by(Message.id)).all()
        assert inbound == ["<first@customer.test>", "<ack-answer@customer.test>",
                           "<thanks@customer.test>"]
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1
    assert sender.send_due().sent == 0  # answers on a ticket get no acknowledgement


def only(delivered: list[Delivery], recipient: str, *, last: bool = False) -> Delivery:
    found = [d for d in delivered if d.recipients == [recipient]]
    assert found and (last or len(found) == 1), [d.recipients for d in delivered]
    return found[-1]


def test_two_autoresponders_mailing_each_other_stop_at_the_limit(wired: Wired) -> None:
    """A careless robot answers every mail with a fresh one (no Auto-Submitted, no
    References, no tag): each opens a ticket, and the acknowledgements stop at the cap."""
    relay, runtime, sender = wired
    deliver(runtime, customer_mail("bot@robots.test", "Hello", "Hi, I am a robot."))
    answered = 0
    for _ in range(20):  # far more rounds than the loop may live
        sender.send_due()
        fresh = relay.delivered[answered:]
        answered = len(relay.delivered)
        if not fresh:
            break
        for _mail in fresh:
            deliver(runtime, customer_mail("bot@robots.test", "We got your message",
                                           "Thank you for your mail."))
    limit = runtime.settings.acknowledgement.max_per_sender_per_hour
    assert len(relay.delivered) == limit
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == limit + 1


def test_a_dsn_to_one_mails_verp_address_fails_exactly_that_mail(wired: Wired) -> None:
    relay, runtime, sender = wired
    secret = runtime.settings.secret_key
    first = deliver(runtime, customer_mail("ann@customer.test", "One", "First."))
    second = deliver(runtime, customer_mail("gone@customer.test", "Two", "Second."))
    assert sender.send_due().sent == 2
    bounced = only(relay.delivered, "gone@customer.test")
    kept = only(relay.delivered, "ann@customer.test")
    bounced_id = outbox_from_bounce_address(bounced.envelope_from, secret)

    result = deliver(runtime, dsn(bounced, "gone@customer.test", "5.1.1",
                                  "550 5.1.1 <gone@customer.test>: mailbox unknown"),
                     bounced.envelope_from)
    assert (result.action, result.ticket) == ("appended", second.ticket)
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 2  # none opened
        row = s.get(Outbox, bounced_id)
        assert row.state == OutboxState.FAILED
        assert "5.1.1" in row.last_error and "mailbox unknown" in row.last_error
        other = s.get(Outbox, outbox_from_bounce_address(kept.envelope_from, secret))
        assert other.state == OutboxState.SENT
        report = s.scalar(select(Message).where(Message.bounce_of_id == bounced_id))
        assert report.ticket_id == second.ticket and report.auto == "bounce"
        assert report.threaded_by == "bounce"
        ticket = get_ticket(s, second.ticket)
        assert ticket.status == "new"  # a robot changes no state
        assert len(events(s, ticket, EventKind.DELIVERY_FAILED)) == 1
        assert suppressed_until(s, "gone@customer.test") is not None
        assert get_ticket(s, first.ticket).message_count >= 1
    # the suppressed address gets no acknowledgement for its next ticket
    again = deliver(runtime, customer_mail("gone@customer.test", "Three", "Third."))
    assert again.action == "created" and sender.send_due().sent == 0


def test_a_delayed_dsn_is_recorded_and_a_forged_verp_matches_nothing(wired: Wired) -> None:
    relay, runtime, sender = wired
    secret = runtime.settings.secret_key
    opened = deliver(runtime, customer_mail("slow@customer.test", "Slow", "Hello."))
    sender.send_due()
    [ack] = relay.delivered
    ack_id = outbox_from_bounce_address(ack.envelope_from, secret)
    delayed = deliver(runtime, dsn(ack, "slow@customer.test", "4.4.7",
                                   "still trying", action="delayed"), ack.envelope_from)
    assert (delayed.action, delayed.ticket) == ("appended", opened.ticket)
    forged = bounce_address(SUPPORT, ack_id, "not-our-secret")
    deliver(runtime, dsn(ack, "slow@customer.test", "5.1.1", "unknown", message_id=False,
                         to=forged), forged)
    with runtime.sessions() as s:
        assert s.get(Outbox, ack_id).state == OutboxState.SENT
        assert suppressed_until(s, "slow@customer.test") is None
        assert s.scalar(select(func.count()).select_from(Message).where(
            Message.bounce_of_id == ack_id)) == 1


def dsn(original: Delivery, recipient: str, status: str, diagnostic: str, *,
        action: str = "failed", message_id: bool = True, to: str = "") -> bytes:
    """An RFC 3464 report as Postfix writes it, sent to the original's envelope sender."""
    returned = "".join(f"{k}: {v}\n" for k, v in original.mail.items()
                       if message_id or k.lower() != "message-id")
    return f"""From: MAILER-DAEMON@mx.customer.test (Mail Delivery System)
To: {to or original.envelope_from}
Subject: Undelivered Mail Returned to Sender
Message-ID: {make_msgid(domain="mx.customer.test")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered to {recipient}.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.test

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--b1
Content-Type: text/rfc822-headers

{returned}
--b1--
""".replace("\n", "\r\n").encode()


def test_our_reply_to_an_outlook_mail_extends_its_thread_index(
        tmp_path: Path, database_url: str) -> None:
    parent_index = "AQHZ2XJ5kV7mE3qLR0e1hN3vYm4yJw=="
    relay = Relay()
    with running(relay) as port, gateway(tmp_path, database_url, port,
                                         acknowledgement={"enabled": False}) as runtime:
        opened = deliver(runtime, customer_mail(
            "Erik <erik@contoso.test>", "Drucker defekt", "Der Drucker druckt nicht.",
            Thread_Topic="Drucker defekt", Thread_Index=parent_index))
        with runtime.sessions.begin() as s:
            fox = add_agent(s, "agent@example.com", password="a-long-password",
                            must_change_password=False)
            queue_reply(s, get_ticket(s, opened.ticket), agent=fox, text="Bitte neu starten.",
                        tag="ACME")
        Sender(runtime).send_due()
        mail = only(relay.delivered, "erik@contoso.test").mail
        child = base64.b64decode(mail["Thread-Index"])
        assert child[:22] == base64.b64decode(parent_index) and len(child) == 27
        assert mail["Thread-Topic"] == "Drucker defekt"
