"""What our mail looks like once parsed back: headers that thread, both parts, attachments,
the signed reply and bounce addresses, Outlook's Thread-Index, and no header injection."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailgateway.compose import (
    FILETIME_EPOCH,
    ComposeError,
    compose,
    extend_thread_index,
    mail_templates,
    templates_dir,
)
from mailgateway.outbound_steps import followup_policy
from mailgateway.reply_token import outbox_from_bounce_address, ticket_from_address
from mailgateway.runtime import Runtime
from models.customer_mail import open_ticket
from models.followups import after_customer_message
from models.replies import queue_reply
from models.schema import Message, Outbox, utcnow
from models.tickets import AttachmentDraft
from tests.models.factories import agent, default_queue, inbound

# An Outlook 2016 Thread-Index of a first message (22 bytes: 0x01, FILETIME, GUID).
OUTLOOK_INDEX = "AQHZ2XJ5kV7mE3qLR0e1hN3vYm4yJw=="


def parse(mail: EmailMessage) -> EmailMessage:
    return email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)


def compose_row(runtime: Runtime, outbox_id: int, settings=None) -> tuple[EmailMessage, str]:
    with runtime.sessions() as s:
        row = s.get(Outbox, outbox_id)
        body = s.get(Message, row.message_row_id) if row.message_row_id else None
        done = compose(row, body, settings=settings or runtime.settings, store=runtime.store,
                       templates=mail_templates())
        assert done.recipients == row.recipients
        return parse(done.message), done.envelope_from


def open_and_follow_up(runtime: Runtime, **fields) -> tuple[int, dict[str, int]]:
    with runtime.sessions.begin() as s:
        agent(s, "agent@example.com")
        ticket, message = open_ticket(s, inbound(from_name="Dana Scully", **fields),
                                      queue=default_queue(s))
        done = after_customer_message(s, ticket, message, created=True,
                                      policy=followup_policy(runtime.settings))
        return ticket.id, {r.kind: r.id for r in done.queued}


def test_acknowledgement_headers_and_both_parts(runtime: Runtime) -> None:
    ticket_id, rows = open_and_follow_up(runtime, subject="Invoice wrong",
                                         message_id="<first@customer.example>")
    mail, envelope = compose_row(runtime, rows["acknowledgement"])
    with runtime.sessions() as s:
        row = s.get(Outbox, rows["acknowledgement"])
    secret = runtime.settings.secret_key
    assert mail["Message-ID"] == row.rfc_message_id
    assert mail["Date"].datetime is not None
    assert mail["From"].addresses[0].addr_spec == "support@example.com"
    assert mail["From"].addresses[0].display_name == runtime.settings.outbound.from_name
    assert mail["To"].addresses[0].addr_spec == "anna@customer.example"
    assert ticket_from_address(mail["Reply-To"].addresses[0].addr_spec, secret) == ticket_id
    assert mail["Subject"] == f"Re: Invoice wrong [ACME #{ticket_id}]"
    assert mail["In-Reply-To"] == "<first@customer.example>"
    assert mail["References"] == "<first@customer.example>"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert f"ticket #{ticket_id}" in text and "Hello Dana Scully" in text
    assert f"ticket #{ticket_id}" in html and "Dana Scully" in html
    assert outbox_from_bounce_address(envelope, secret) == row.id
    assert envelope.endswith("@example.com") and "+b" in envelope


def test_notification_is_auto_generated_text_without_reply_token(runtime: Runtime) -> None:
    ticket_id, rows = open_and_follow_up(runtime, text="My printer is on fire.\n> old",
                                       reply_text="My printer is on fire.")
    mail, _ = compose_row(runtime, rows["notification"])
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Reply-To"] is None
    assert mail["To"].addresses[0].addr_spec == "agent@example.com"
    assert mail["Subject"].startswith(f"[ACME #{ticket_id}]")
    body = mail.get_body(("plain",)).get_content()
    assert "My printer is on fire." in body and f"/tickets/{ticket_id}" in body


def test_agent_reply_threads_carries_attachments_and_is_not_automatic(runtime: Runtime) -> None:
    data = b"%PDF-1.4 refund receipt\x00\xff"
    digest = runtime.store.put(data)
    with runtime.sessions.begin() as s:
        ticket, _ = open_ticket(s, inbound(subject="RE: Fwd: Invoice wrong",
                                           message_id="<c1@customer.example>",
                                           references="<a0@customer.example>"),
                                queue=default_queue(s))
        reply = queue_reply(s, ticket, agent=agent(s), text="Refunded.\n\n<b>Thanks</b> & bye",
                            tag="ACME", cc=["bob@customer.example"],
                            attachments=[AttachmentDraft("receipt.pdf", "application/pdf",
                                                         len(data), digest)])
        ticket_id, reply_id = ticket.id, reply.id
        outbox_id = s.scalar(select(Outbox.id).where(Outbox.message_row_id == reply_id))
    mail, _ = compose_row(runtime, outbox_id)
    assert mail["Subject"] == f"Re: Invoice wrong [ACME #{ticket_id}]"
    assert mail["In-Reply-To"] == "<c1@customer.example>"
    assert mail["References"] == "<a0@customer.example> <c1@customer.example>"
    assert mail["Cc"].addresses[0].addr_spec == "bob@customer.example"
    assert mail["Auto-Submitted"] is None and mail["Precedence"] is None
    assert mail.get_content_type() == "multipart/mixed"
    assert mail.get_body(("plain",)).get_content().strip() == "Refunded.\n\n<b>Thanks</b> & bye"
    assert "&lt;b&gt;Thanks&lt;/b&gt; &amp; bye" in mail.get_body(("html",)).get_content()
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_content() == data


def test_cr_lf_in_a_subject_or_name_cannot_add_a_header(runtime: Runtime) -> None:
    evil = "Invoice\r\nBcc: victim@example.org\r\nX-Injected: yes"
    ticket_id, rows = open_and_follow_up(runtime, subject=evil)
    settings = dataclasses.replace(runtime.settings, outbound=dataclasses.replace(
        runtime.settings.outbound, from_name="Support\r\nX-Injected: name"))
    mail, _ = compose_row(runtime, rows["acknowledgement"], settings)
    head = mail.as_bytes().split(b"\n\n", 1)[0]
    assert mail["Bcc"] is None and mail["X-Injected"] is None
    assert b"\nBcc:" not in head and b"\nX-Injected" not in head
    assert len(mail.get_all("Subject")) == 1
    assert mail["Subject"] == (
        f"Re: Invoice Bcc: victim@example.org X-Injected: yes [ACME #{ticket_id}]")
    assert mail["From"].addresses[0].display_name == "Support X-Injected: name"


def test_an_address_with_cr_lf_is_refused_not_sent(runtime: Runtime) -> None:
    _, rows = open_and_follow_up(runtime)
    with runtime.sessions.begin() as s:
        row = s.get(Outbox, rows["acknowledgement"])
        row.context = {**row.context, "to": ["anna@customer.example\r\nBcc: victim@example.org"]}
    with pytest.raises(ComposeError, match="not a deliverable address"):
        compose_row(runtime, rows["acknowledgement"])


def test_a_reply_to_an_outlook_message_extends_its_thread_index(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        ticket, _ = open_ticket(s, inbound(subject="Drucker", thread_index=OUTLOOK_INDEX,
                                           thread_topic="Drucker"), queue=default_queue(s))
        queue_reply(s, ticket, agent=agent(s), text="Neu starten.", tag="ACME")
        outbox_id = s.scalar(select(Outbox.id).where(Outbox.kind == "reply"))
    mail, _ = compose_row(runtime, outbox_id)
    again, _ = compose_row(runtime, outbox_id)
    parent = base64.b64decode(OUTLOOK_INDEX)
    child = base64.b64decode(mail["Thread-Index"])
    assert len(child) == 27 and child[:22] == parent
    assert mail["Thread-Topic"] == "Drucker"
    assert again["Thread-Index"] == mail["Thread-Index"]  # a retry sends the same index


def test_thread_index_time_delta_follows_ms_oxomsg() -> None:
    parent = base64.b64decode(OUTLOOK_INDEX)
    header_time = int.from_bytes(parent[1:6], "big") << 24
    started = FILETIME_EPOCH + timedelta(microseconds=header_time // 10)
    later = started + timedelta(hours=5)
    child = base64.b64decode(extend_thread_index(OUTLOOK_INDEX, later, seed="<x@y>"))
    level = int.from_bytes(child[22:26], "big")
    assert level >> 31 == 0  # a small delta: delta code 0, bits 18..48
    decoded = timedelta(microseconds=((level & 0x7FFFFFFF) << 18) // 10)
    assert abs(decoded - timedelta(hours=5)) < timedelta(seconds=1)
    far = base64.b64decode(extend_thread_index(OUTLOOK_INDEX, started + timedelta(days=800),
                                               seed="<x@y>"))
    assert int.from_bytes(far[22:26], "big") >> 31 == 1  # more than ~1.8 years: code 1
    assert extend_thread_index("not base64!", later, seed="x") is None
    assert extend_thread_index(base64.b64encode(b"\x01short").decode(), later, seed="x") is None


def test_a_queue_may_have_its_own_acknowledgement(runtime: Runtime, tmp_path) -> None:
    folder = tmp_path / "mail"
    (folder / "queues" / "support").mkdir(parents=True)
    for name in ("acknowledgement.txt", "acknowledgement.html", "reply.html"):
        (folder / name).write_text((templates_dir() / name).read_text())
    (folder / "queues" / "support" / "acknowledgement.txt").write_text(
        "Support desk got #{{ ticket_id }}.\n")
    _, rows = open_and_follow_up(runtime)
    with runtime.sessions() as s:
        row = s.get(Outbox, rows["acknowledgement"])
        done = compose(row, None, settings=runtime.settings, store=runtime.store,
                       templates=mail_templates(folder), now=utcnow())
    mail = parse(done.message)
    assert mail.get_body(("plain",)).get_content().startswith("Support desk got #")
    assert mail.get_body(("html",)) is not None  # the default HTML still goes along
