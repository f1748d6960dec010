"""classify() and delivery_report() on real-shaped mail from tests/corpus/classify/."""

from __future__ import annotations

import email
from email.header import Header
from email.message import Message
from pathlib import Path

import pytest

from mailgateway.classify import (
    HUMAN,
    DeliveryReport,
    Rule,
    classify,
    delivery_report,
    header_text,
    is_auto_submitted,
    is_autoresponder,
    is_delivery_status_report,
    is_list_post,
    is_looped_ticket_system,
    is_mailer_daemon_failure,
    is_null_sender_failure,
    is_precedence_auto_reply,
    is_precedence_bulk_or_list,
    is_read_receipt,
)
from mailgateway.parse import read_message

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "classify"
FIXTURES = sorted(path.name for path in CORPUS.glob("*.eml"))


def load(name: str) -> Message:
    """As ingest gets it: a compat32 email.message.Message, read by parse.read_message."""
    return read_message((CORPUS / name).read_bytes(), [])


CLASSIFY_CASES = [
    # rule 1: delivery status notifications, before their own Auto-Submitted
    ("postfix-dsn.eml", "bounce", "multipart/report delivery-status"),
    ("exim-dsn.eml", "bounce", "multipart/report delivery-status"),
    ("gmail-dsn-failure.eml", "bounce", "multipart/report delivery-status"),
    ("postfix-smtputf8-dsn.eml", "bounce", "multipart/report delivery-status"),
    ("sendmail-delayed.eml", "bounce", "multipart/report delivery-status"),
    ("sendmail-relayed-and-failed.eml", "bounce", "multipart/report delivery-status"),
    ("qmail-bounce.eml", "bounce", "From: MAILER-DAEMON@mail.oldhost.example"),
    ("exchange-ndr-legacy.eml", "bounce", "'Undeliverable: [Helpdesk #1054] Ihre Laptop"),
    ("domino-delivery-failure.eml", "bounce", "Return-Path: <> with subject 'DELIVERY"),
    # read receipts (F-robot-reopen): they carry no Auto-Submitted
    ("thunderbird-read-receipt.eml", "auto-generated", "read receipt: multipart/report"),
    ("outlook-read-receipt-de.eml", "auto-generated", "read receipt: multipart/report"),
    # rule 2: RFC 3834 Auto-Submitted
    ("gmail-vacation.eml", "auto-reply", "Auto-Submitted: auto-replied"),
    ("outlook-com-oof.eml", "auto-reply", "Auto-Submitted: auto-replied"),
    ("exchange-oof.eml", "auto-generated", "Auto-Submitted: auto-generated"),
    # rule 3: pre-RFC 3834 autoresponders, Microsoft's suppress request
    ("microsoft-auto-reply.eml", "auto-reply", "X-Auto-Response-Suppress: All"),
    ("x-autoreply.eml", "auto-reply", "X-Autoreply: yes"),
    ("x-autorespond.eml", "auto-reply", "X-Autorespond: [Helpdesk #1053]"),
    ("vacation-precedence-auto-reply.eml", "auto-reply", "Precedence: auto_reply"),
    ("vacation-x-precedence-auto-reply.eml", "auto-reply", "X-Precedence: auto_reply"),
    # rule 4: Precedence
    ("newsletter-bulk.eml", "bulk", "Precedence: bulk"),
    ("mailman2-list-post.eml", "list", "Precedence: list"),
    # rule 5: list headers
    ("mailman3-list-post.eml", "list", "List-Id: Users of Example <users.lists.example.org>"),
    ("smartlist-post.eml", "list", "X-Mailing-List: <tech@lists.oldschool.example>"),
    ("encoded-headers-list-post.eml", "list", "List-Id: Café Forum <cafe.lists.example.org>"),
    # rule 6: X-Loop
    ("otrs-x-loop.eml", "auto-generated", "X-Loop: yes"),
    # people, whatever their subject says
    ("human-out-of-office-question.eml", None, HUMAN.reason),
    ("human-auto-submitted-no.eml", None, HUMAN.reason),
    ("outlook-human-receipts.eml", None, HUMAN.reason),
    ("human-read-subject.eml", None, HUMAN.reason),  # "Read: my notes ...", no report part
    ("postmaster-human.eml", None, HUMAN.reason),
    ("forwarded-bounce.eml", None, HUMAN.reason),
    ("crm-one-to-one.eml", None, HUMAN.reason),
    ("encoded-headers-human.eml", None, HUMAN.reason),
]


@pytest.mark.parametrize(("fixture", "auto", "reason"), CLASSIFY_CASES)
def test_classify(fixture: str, auto: str | None, reason: str) -> None:
    verdict = classify(load(fixture))
    assert verdict.auto == auto
    assert reason in verdict.reason


def test_every_fixture_has_a_classify_case() -> None:
    assert {fixture for fixture, _, _ in CLASSIFY_CASES} == set(FIXTURES)


@pytest.mark.parametrize(
    ("rule", "hit", "miss"),
    [
        (is_delivery_status_report, "postfix-dsn.eml", "qmail-bounce.eml"),
        (is_mailer_daemon_failure, "qmail-bounce.eml", "postmaster-human.eml"),
        (is_mailer_daemon_failure, "exchange-ndr-legacy.eml", "forwarded-bounce.eml"),
        (is_null_sender_failure, "domino-delivery-failure.eml", "forwarded-bounce.eml"),
        (is_auto_submitted, "gmail-vacation.eml", "human-auto-submitted-no.eml"),
        (is_autoresponder, "microsoft-auto-reply.eml", "outlook-human-receipts.eml"),
        (is_autoresponder, "x-autoreply.eml", "human-out-of-office-question.eml"),
        (is_read_receipt, "outlook-read-receipt-de.eml", "human-read-subject.eml"),
        (is_read_receipt, "thunderbird-read-receipt.eml", "postfix-dsn.eml"),
        (is_precedence_auto_reply, "vacation-precedence-auto-reply.eml", "newsletter-bulk.eml"),
        (is_precedence_bulk_or_list, "newsletter-bulk.eml", "mailman3-list-post.eml"),
        (is_list_post, "mailman3-list-post.eml", "crm-one-to-one.eml"),
        (is_looped_ticket_system, "otrs-x-loop.eml", "human-out-of-office-question.eml"),
    ],
)
def test_rule_hit_and_miss(rule: Rule, hit: str, miss: str) -> None:
    assert rule(load(hit)) is not None
    assert rule(load(miss)) is None


@pytest.mark.parametrize(
    ("fixture", "report"),
    [
        (
            "postfix-dsn.eml",
            DeliveryReport(
                action="failed",
                status="5.1.1",
                recipient="nobody@customer.example",  # Original-Recipient, what we sent to
                diagnostic="550 5.1.1 <n.obody@mailstore.customer.example>: Recipient address"
                " rejected: User unknown in local recipient table",
                original_message_id="<ack-1044.20240314090210@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "exim-dsn.eml",
            DeliveryReport(
                action="failed",
                status="5.0.0",  # the Status field wins over the code in the diagnostic
                recipient="ghost@customer.example",
                diagnostic="550 5.1.1 <ghost@customer.example>: Recipient address rejected:"
                " User unknown",
                original_message_id="<reply-1045-3@helpdesk.example>",  # text/rfc822-headers
                permanent=True,
            ),
        ),
        (
            "gmail-dsn-failure.eml",
            DeliveryReport(
                action="failed",
                status="5.1.1",
                recipient="m.rossi@gmail.com",
                diagnostic="550 5.1.1 The email account that you tried to reach does not exist."
                " Please try double-checking the recipient's email address for typos or"
                " unnecessary spaces. For more information, go to"
                " https://support.google.com/mail/?p=NoSuchUser"
                " a1-20020a05600c4e0100b00412a1b2c3d4si123456wmq.99 - gsmtp",
                original_message_id="<outbox-77.1710408800@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "postfix-smtputf8-dsn.eml",  # RFC 6533 message/global-delivery-status, global-headers
            DeliveryReport(
                action="failed",
                status="5.2.2",
                recipient="josé@correo.example",
                diagnostic="550 5.2.2 <josé@correo.example>: mailbox full",
                original_message_id="<ack-1057.20240314142000@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "sendmail-delayed.eml",
            DeliveryReport(
                action="delayed",
                status="4.4.7",
                recipient="pat@slow.example",
                diagnostic="Delivery time expired",  # no Diagnostic-Code: RFC 3463's name
                original_message_id="<ack-1047.20240314093158@helpdesk.example>",
                permanent=False,
            ),
        ),
        (
            "sendmail-relayed-and-failed.eml",
            DeliveryReport(
                action="failed",  # the first failed recipient, not the relayed one before it
                status="5.2.1",
                recipient="lena@customer.example",
                diagnostic="550 5.2.1 Mailbox disabled for this recipient",
                original_message_id="<reply-1049-1@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "qmail-bounce.eml",
            DeliveryReport(
                action="failed",
                status="5.1.1",
                recipient="olaf@oldhost.example",
                diagnostic="Remote host said: 550 5.1.1 <olaf@oldhost.example>... User unknown",
                original_message_id="<reply-1048-1@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "exchange-ndr-legacy.eml",
            DeliveryReport(
                action="failed",
                status="5.1.1",
                recipient="k.schmidt@customer.example",
                diagnostic="The e-mail account does not exist at the organization this message"
                " was sent to. Check the e-mail address, or contact the recipient directly to"
                " find out the correct address. <EXCH01.customer.example #5.1.1>",
                original_message_id="<reply-1054-2@helpdesk.example>",
                permanent=True,
            ),
        ),
        (
            "domino-delivery-failure.eml",
            DeliveryReport(
                action="failed",
                status="5.0.0",  # no code anywhere: a failure notice counts as permanent
                recipient="k.weber@partner.example",
                diagnostic="User k.weber (k.weber@partner.example) not listed in Domino Directory",
                original_message_id=None,
                permanent=True,
            ),
        ),
    ],
)
def test_delivery_report(fixture: str, report: DeliveryReport) -> None:
    assert delivery_report(load(fixture)) == report


@pytest.mark.parametrize(
    "fixture",
    [
        "gmail-vacation.eml",
        "exchange-oof.eml",
        "mailman3-list-post.eml",
        "newsletter-bulk.eml",
        "otrs-x-loop.eml",
        "human-out-of-office-question.eml",
        "postmaster-human.eml",
        "forwarded-bounce.eml",
        "encoded-headers-human.eml",
    ],
)
def test_delivery_report_is_none_when_not_a_bounce(fixture: str) -> None:
    assert delivery_report(load(fixture)) is None


class HeadersOnly(Message):
    """A message whose body must not be read."""

    def get_payload(self, i: int | None = None, decode: bool = False) -> object:
        raise AssertionError("classify() read a body")


@pytest.mark.parametrize("fixture", FIXTURES)
def test_classify_reads_headers_only(fixture: str) -> None:
    """classify() runs on every message of a bulk import: headers only."""
    raw = (CORPUS / fixture).read_bytes()
    headers_only = email.message_from_bytes(raw, _class=HeadersOnly)
    assert classify(headers_only) == classify(email.message_from_bytes(raw))


def test_headers_only_guard_catches_a_body_read() -> None:
    raw = (CORPUS / "postfix-dsn.eml").read_bytes()
    with pytest.raises(AssertionError, match="read a body"):
        delivery_report(email.message_from_bytes(raw, _class=HeadersOnly))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("  plain\n\tfolded ", "plain folded"),
        ("=?utf-8?q?Caf=C3=A9?= <cafe.lists.example>", "Café <cafe.lists.example>"),
        ("=?iso-8859-1?b?TfxsbGVy?=", "Müller"),
        (Header("Café Forum", "utf-8"), "Café Forum"),
        ("=?utf-8?b?not base64!?=", "=?utf-8?b?not base64!?="),  # broken word: left as is
        ("=?x-no-such-charset?q?abc?=", "abc"),
    ],
)
def test_header_text(value: object, text: str) -> None:
    assert header_text(value) == text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("Subject: Réunion =?utf-8?q?d=C3=A9j=C3=A0?= vu".encode(), "Réunion déjà vu"),
        ("Subject: Grüße".encode("latin-1"), "Grüße"),  # not UTF-8: read as Latin-1
    ],
)
def test_header_text_reads_raw_8bit(raw: bytes, text: str) -> None:
    subject = email.message_from_bytes(raw + b"\n\n")["Subject"]
    assert isinstance(subject, Header)  # what compat32 hands over for raw 8-bit
    assert header_text(subject) == text
