"""The ingest path on SQLite and PostgreSQL: every message stored exactly once, nothing lost,
robots kept away from the ticket's state, and the new text of a reply told apart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.ingest import Source, receive_batch, retry_quarantined
from mailgateway.runtime import Runtime, open_runtime
from models.inbound import quarantined
from models.schema import Contact, Message, Outbox, RawMail, RawState, Ticket
from models.tickets import PENDING, SOLVED, change_status_quietly, get_ticket
from tests.conftest import write_config
from tests.mailgateway.ingest_support import (
    AGENT_REPLY,
    answer,
    deliver,
    eml,
    inbound,
    raw_row,
    runtime_with_two_queues,
    set_header,
    show,
    stored_messages,
    threaded,
    with_headers,
)
from tests.mailgateway.smtp_gateway import mail

SMTP_HOP = ("Received: from mx.example.com (mx.example.com [198.51.100.2])",
            "\tby gateway.example.com (mailgateway) with SMTP; Mon, 3 Jun 2024 09:57:00 +0200")
IMAP_HOP = ("Received: from mailstore.example.com by imap.example.com (Dovecot) with LMTP",
            "\tid 8Hq2Bk0vXWYmIAAA; Mon, 3 Jun 2024 09:57:03 +0200")


# -- exactly once ---------------------------------------------------------------------------

def test_the_same_bytes_twice_are_one_message(runtime: Runtime) -> None:
    first = deliver(runtime, "thunderbird-new-ticket")
    again = deliver(runtime, "thunderbird-new-ticket")
    assert (again.action, again.ticket, again.raw_id) == ("duplicate", first.ticket, first.raw_id)
    assert stored_messages(runtime, first.message_id) == 1


def test_the_same_message_by_smtp_and_by_imap_is_one_message(runtime: Runtime) -> None:
    """Each path adds its own Received lines: other bytes, the same Message-ID."""
    data = eml("thunderbird-new-ticket")
    by_smtp = deliver(runtime, with_headers(data, *SMTP_HOP))
    by_imap = deliver(runtime, with_headers(data, *IMAP_HOP), kind="imap")
    assert by_smtp.action == "created" and by_smtp.raw_id != by_imap.raw_id
    assert (by_imap.action, by_imap.ticket) == ("duplicate", by_smtp.ticket)
    assert stored_messages(runtime, by_smtp.message_id) == 1
    assert raw_row(runtime, by_imap.raw_id).state == RawState.STORED


def test_a_mail_without_message_id_is_one_message_by_its_content(runtime: Runtime) -> None:
    """The scanner sends no Message-ID; SMTP hands it over with CRLF line ends, the Maildir
    copy the IMAP path reads has LF and another Received line."""
    data = eml("scanner-no-message-id")
    assert b"Message-ID" not in data and b"\r\n" not in data
    by_smtp = deliver(runtime, with_headers(data, *SMTP_HOP).replace(b"\n", b"\r\n"))
    from_maildir = deliver(runtime, with_headers(data, *IMAP_HOP), kind="imap")
    assert by_smtp.action == "created" and by_smtp.message_id is None
    assert (from_maildir.action, from_maildir.ticket) == ("duplicate", by_smtp.ticket)
    with runtime.sessions() as session:
        [key] = session.scalars(select(Message.dedup_key).where(Message.direction == "inbound"))
    assert key.startswith("sha256:")
    # a second scan is another message, though it has no Message-ID either
    other = deliver(runtime, data.replace(b"Pages: 1", b"Pages: 2"))
    assert other.action == "created"


def test_scanned_pages_sent_as_mails_of_their_own_are_each_kept(runtime: Runtime) -> None:
    """Regression (F-dedup-ignores-attachments): page 2 differs from page 1 only in its PDF;
    it was answered as a duplicate and its PDF was lost. Page 2 again is a duplicate."""
    page1 = deliver(runtime, "scanner-page-1-no-message-id")
    page2 = deliver(runtime, "scanner-page-2-no-message-id")
    again = deliver(runtime, with_headers(eml("scanner-page-2-no-message-id"), *IMAP_HOP),
                    kind="imap")
    assert (page1.action, page2.action, again.action) == ("created", "created", "duplicate")
    assert again.ticket == page2.ticket
    names = [a["filename"] for ticket in (page1.ticket, page2.ticket)
             for m in inbound(show(runtime, ticket)) for a in m["attachments"]]
    assert names == ["SCAN_20240605_162005_0001.pdf", "SCAN_20240605_162005_0002.pdf"]


@pytest.fixture
def two_queues(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    yield from runtime_with_two_queues(tmp_path, database_url)


def test_one_mail_to_two_of_our_addresses_in_two_envelopes_is_one_message(
        two_queues: Runtime) -> None:
    runtime = two_queues
    data = set_header(eml("thunderbird-new-ticket"), "Cc", "billing@example.com")
    one = deliver(runtime, with_headers(data, "Delivered-To: support@example.com"),
                  recipients=("support@example.com",))
    two = deliver(runtime, with_headers(data, "Delivered-To: billing@example.com"),
                  recipients=("billing@example.com",))
    assert one.action == "created" and (two.action, two.ticket) == ("duplicate", one.ticket)
    assert stored_messages(runtime, one.message_id) == 1
    assert "billing@example.com" not in [
        p["address"] for p in show(runtime, one.ticket)["participants"]]


def test_a_batch_with_the_same_message_twice(runtime: Runtime) -> None:
    data = eml("thunderbird-new-ticket")
    results = receive_batch(runtime, [(data, Source("import", "a")), (data, Source("import", "b")),
                                      (with_headers(data, *IMAP_HOP), Source("imap", "c"))])
    assert [r.action for r in results] == ["created", "duplicate", "duplicate"]
    assert {r.ticket for r in results} == {results[0].ticket}  # every answer names the ticket
    assert {r.message_id for r in results} == {results[0].message_id}
    assert stored_messages(runtime, results[0].message_id) == 1


@pytest.mark.parametrize("in_one_batch", [False, True])
def test_a_message_id_a_web_form_reuses_for_every_mail_loses_no_one(
        runtime: Runtime, in_one_batch: bool) -> None:
    """Found by QA: a shop's contact form stamps every mail <contactform@shop.example>; the
    second customer's question was answered "duplicate" of the first one's ticket. Another
    Date makes it another message; the same mail again is still one."""
    carla, bob = eml("webform-reused-message-id-1"), eml("webform-reused-message-id-2")
    if in_one_batch:
        first, second = receive_batch(runtime, [(carla, Source("smtp")), (bob, Source("smtp"))])
    else:
        first, second = deliver(runtime, carla), deliver(runtime, bob)
    assert (first.action, second.action) == ("created", "created")
    assert second.message_id == first.message_id == "<contactform@shop.example>"
    assert "refund for order 2002" in inbound(show(runtime, second.ticket))[0]["text"]
    assert stored_messages(runtime, "<contactform@shop.example>") == 2
    for data, ticket in ((carla, first.ticket), (bob, second.ticket)):
        again = deliver(runtime, with_headers(data, *IMAP_HOP), kind="imap")
        assert (again.action, again.ticket) == ("duplicate", ticket)
    assert stored_messages(runtime, "<contactform@shop.example>") == 2


def test_our_reply_coming_back_through_a_list_is_still_a_duplicate(runtime: Runtime) -> None:
    """Our own mail's stored time is when it left, not its Date header: a copy of it that
    comes back (a list that rewrote From) is not taken for a reused Message-ID."""
    first = deliver(runtime, "thunderbird-new-ticket")
    answer(runtime, first.ticket, AGENT_REPLY)
    with runtime.sessions.begin() as session:
        session.execute(update(Message).where(Message.message_id == AGENT_REPLY)
                        .values(sent_at=datetime(2024, 6, 3, 10, 0, 7, 123456)))
    copy = (f"From: Support via Users <users@lists.example.org>\nTo: users@lists.example.org\n"
            f"Subject: Re: [ACME #{first.ticket}] Printer\nDate: Mon, 3 Jun 2024 10:00:05 +0000\n"
            f"Message-ID: {AGENT_REPLY}\n\nDear customer, we are on it.\n").encode()
    back = deliver(runtime, copy)
    assert (back.action, back.ticket) == ("duplicate", first.ticket)
    assert stored_messages(runtime, AGENT_REPLY) == 1


# -- nothing lost ---------------------------------------------------------------------------

def test_garbage_is_quarantined_with_its_bytes(runtime: Runtime) -> None:
    garbage = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR not a mail at all"
    result = deliver(runtime, garbage, kind="pipe")
    assert result.action == "quarantined" and result.not_a_message
    assert "not an email message" in result.reason
    with runtime.sessions() as session:
        [kept] = quarantined(session)
    assert kept.id == result.raw_id and runtime.store.get(kept.sha256) == garbage
    assert deliver(runtime, garbage, kind="pipe").action == "quarantined"  # and once only


@contextmanager
def billing_not_yet_initialised(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """A queue added to config.toml before `mailgateway init` ran: mail for it cannot be put
    in that queue yet."""
    before = write_config(tmp_path, database_url)
    runtime = open_runtime(load_settings(before))
    prepare_database(runtime)
    runtime.close()
    after = write_config(tmp_path, database_url, queues=[
        {"name": "Support", "address": "support@example.com", "default": True},
        {"name": "Billing", "address": "billing@example.com"}])
    runtime = open_runtime(load_settings(after))
    try:
        yield runtime
    finally:
        runtime.close()


def test_a_message_the_store_step_fails_on_is_quarantined_and_retried_after_the_fix(
        tmp_path: Path, database_url: str) -> None:
    """Mail for a queue `mailgateway init` has not created waits in quarantine, its
    neighbours in the batch go through, and a retry after `init` runs the normal path."""
    with billing_not_yet_initialised(tmp_path, database_url) as runtime:
        good, bad = receive_batch(runtime, [(eml("thunderbird-new-ticket"), Source("smtp")),
                                            (eml("billing-new"), Source("smtp"))])
        assert good.action == "created"
        assert bad.action == "quarantined" and "Billing" in bad.reason
        assert "mailgateway init" in bad.reason
        kept = raw_row(runtime, bad.raw_id)
        assert kept.state == RawState.QUARANTINED
        assert kept.header_from == "tom.fischer@fabrikam.example"
        prepare_database(runtime)  # what `mailgateway init` does
        retried = retry_quarantined(runtime, bad.raw_id)
        assert retried.action == "created" and retried.reason == "new"
        assert show(runtime, retried.ticket)["queue"] == "Billing"
        assert raw_row(runtime, bad.raw_id).state == RawState.STORED


def test_a_retry_keeps_the_envelope_the_mail_arrived_with(tmp_path: Path,
                                                          database_url: str) -> None:
    """The envelope recipient (in no header: a Bcc, an alias) chose the queue when the mail
    arrived; the retry after the fix routes it the same way."""
    with billing_not_yet_initialised(tmp_path, database_url) as runtime:
        envelope = Source("smtp", "127.0.0.1", ("billing@example.com",))
        (held,) = receive_batch(runtime, [(eml("gmail-new-ticket"), envelope)])
        assert held.action == "quarantined" and "Billing" in held.reason
        assert raw_row(runtime, held.raw_id).recipients == ["billing@example.com"]
        prepare_database(runtime)
        retried = retry_quarantined(runtime, held.raw_id)
        assert retried.action == "created"
        assert show(runtime, retried.ticket)["queue"] == "Billing"


def _refuse_subjects_with(runtime: Runtime, word: str) -> None:
    _refuse_rows(runtime, "message", "subject", word)


def _refuse_rows(runtime: Runtime, table: str, column: str, word: str) -> None:
    """A database rule a message breaks: a trigger refusing rows whose column holds `word`
    (IntegrityError on SQLite, a raised exception on PostgreSQL), like any constraint a
    message or its follow-up might violate."""
    with runtime.engine.begin() as connection:
        if runtime.engine.dialect.name == "sqlite":
            connection.execute(text(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                f"WHEN NEW.{column} LIKE '%{word}%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a database rule'); END"))
        else:
            connection.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.{column}::text LIKE '%{word}%' THEN "
                "RAISE EXCEPTION 'refused by a database rule'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"))
            connection.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                                    "FOR EACH ROW EXECUTE FUNCTION refuse()"))


def _drop_refusal(runtime: Runtime, table: str) -> None:
    with runtime.engine.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse" + (
            "" if runtime.engine.dialect.name == "sqlite" else f" ON {table}")))


def test_a_message_the_database_refuses_is_quarantined_not_a_duplicate_or_a_retry(
        runtime: Runtime) -> None:
    """Regression: on SQLite any IntegrityError counted as a duplicate (the message was
    marked stored and lost); on PostgreSQL any other error failed the whole batch for ever
    (TemporaryFailure, so the MTA retried the same poison message without end)."""
    _refuse_subjects_with(runtime, "CSV export")
    neighbour, refused = receive_batch(runtime, [(eml("thunderbird-new-ticket"), Source("smtp")),
                                                 (eml("gmail-new-ticket"), Source("smtp"))])
    assert neighbour.action == "created"
    assert refused.action == "quarantined" and "refused by a database rule" in refused.reason
    assert stored_messages(runtime, refused.message_id) == 0
    _drop_refusal(runtime, "message")
    assert retry_quarantined(runtime, refused.raw_id).action == "created"


def test_a_new_sender_whose_first_mail_is_refused_still_gets_the_second_stored(
        runtime: Runtime) -> None:
    """Regression: the refused mail's savepoint rolled back the contact it had created, but
    the batch kept handing that contact out: the sender's next mail was quarantined on
    PostgreSQL (a requester row that is gone) and, on SQLite, which gives the id to the
    next new contact, opened a ticket with the Cc'd colleague as requester. A contact made
    in a savepoint that succeeded is kept."""
    _refuse_subjects_with(runtime, "CSV export")
    carlos = "Carlos Mendes <carlos.mendes@gmail.com>"
    again = set_header(set_header(eml("thunderbird-new-ticket"), "From", carlos),
                       "Message-ID", "<second-from-carlos@mail.gmail.com>")
    anna_again = set_header(set_header(set_header(
        eml("gmail-new-ticket"), "From", "Anna Berg <anna.berg@northwind.example>"),
        "Subject", "Export still broken"), "Message-ID", "<later-from-anna@northwind.example>")
    anna, refused, carlos_again, anna_later = receive_batch(runtime, [
        (eml("thunderbird-new-ticket"), Source("smtp")), (eml("gmail-new-ticket"), Source("smtp")),
        (again, Source("smtp")), (anna_again, Source("smtp"))])
    assert refused.action == "quarantined" and "refused by a database rule" in refused.reason
    assert [r.action for r in (anna, carlos_again, anna_later)] == ["created"] * 3
    assert show(runtime, anna.ticket)["requester"] == "anna.berg@northwind.example"
    assert show(runtime, carlos_again.ticket)["requester"] == "carlos.mendes@gmail.com"
    assert show(runtime, anna_later.ticket)["requester"] == "anna.berg@northwind.example"
    with runtime.sessions() as session:
        emails = session.scalars(select(Contact.email).order_by(Contact.email)).all()
    assert emails == ["anna.berg@northwind.example", "carlos.mendes@gmail.com",
                      "jonas.weber@northwind.example"]


def test_a_batch_whose_follow_ups_fail_for_some_loses_nothing_and_a_retry_completes_it(
        runtime: Runtime) -> None:
    """Six customers each write a conversation (a first mail and two replies) into one batch,
    and the database refuses the acknowledgement to two of them. Their mail is quarantined
    (the replies find no ticket and want an acknowledgement too); everyone else's is stored
    with its own sender on its own ticket. After the fix, `quarantine retry` stores the
    rest exactly once, each reply on its conversation's ticket."""
    _refuse_rows(runtime, "outbox", "recipients", "refused.test")
    senders = [f"c{n}@{'refused' if n in (1, 4) else 'customer'}.test" for n in range(6)]

    def conversation_mail(sender: str, n: int) -> bytes:
        parent = f"<{sender}-m{n - 1}>" if n else None
        return mail(sender, f"Order question from {sender}", f"Mail {n} of {sender}.\n",
                    message_id=f"<{sender}-m{n}>", in_reply_to=parent)

    batch = [(conversation_mail(s, n), Source("smtp")) for n in range(3) for s in senders]
    results = dict(zip([(s, n) for n in range(3) for s in senders],
                       receive_batch(runtime, batch), strict=True))
    for sender in senders:
        actions = [results[sender, n].action for n in range(3)]
        if "refused" in sender:
            assert actions == ["quarantined"] * 3
        else:
            assert actions == ["created", "appended", "appended"]
            assert {results[sender, n].ticket for n in range(3)} == {results[sender, 0].ticket}
            assert show(runtime, results[sender, 0].ticket)["requester"] == sender

    _drop_refusal(runtime, "outbox")
    for sender in ("c1@refused.test", "c4@refused.test"):
        retried = [retry_quarantined(runtime, results[sender, n].raw_id) for n in range(3)]
        assert [r.action for r in retried] == ["created", "appended", "appended"]
        assert {r.ticket for r in retried} == {retried[0].ticket}
        assert show(runtime, retried[0].ticket)["requester"] == sender
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "inbound")) == 18
        assert sorted(session.scalars(select(Contact.email))) == sorted(senders)


def test_headers_postgresql_cannot_hold_as_they_are_still_store(runtime: Runtime) -> None:
    """Regression: a NUL in a decoded header, a 400-character address, a 300-character
    content type, a 1,200-character Message-ID or a 2,100-character Thread-Index made
    PostgreSQL refuse the row, and the batch failed for ever."""
    base = eml("thunderbird-new-ticket")
    cases = {
        "nul": set_header(set_header(base, "Subject", "=?utf-8?q?Invoice=00_charged_twice?="),
                          "Message-ID", "<nul@northwind.example>"),
        "address": set_header(set_header(base, "From", "a" * 400 + "@northwind.example"),
                              "Message-ID", "<address@northwind.example>"),
        "thread-index": set_header(set_header(base, "Message-ID", "<index@northwind.example>"),
                                   "Content-Language", "en\nThread-Index: " + "A" * 2100),
        "message-id": set_header(base, "Message-ID", "<" + "m" * 1200 + "@northwind.example>"),
        "content-type": eml("scanner-no-message-id").replace(
            b"application/pdf", b"application/" + b"x" * 300),
    }
    results = receive_batch(runtime, [(data, Source("smtp")) for data in cases.values()])
    assert [r.action for r in results] == ["created"] * len(cases), [r.reason for r in results]
    with runtime.sessions() as session:
        subject = session.scalar(select(Message.subject).where(
            Message.message_id == "<nul@northwind.example>"))
        long_id = session.scalar(select(Message.message_id).where(
            Message.message_id.like("<mmm%")))
    assert subject == "Invoice charged twice"
    assert len(long_id) == 998


def test_mail_from_our_own_address_is_kept_and_ignored(runtime: Runtime) -> None:
    data = set_header(eml("thunderbird-new-ticket"), "From", "Support <support@example.com>")
    result = deliver(runtime, data)
    assert (result.action, result.ticket) == ("ignored", None)
    assert result.reason == "from our own address support@example.com"
    kept = raw_row(runtime, result.raw_id)
    assert (kept.state, kept.ticket_id, kept.reason) == (RawState.IGNORED, None, result.reason)
    assert runtime.store.get(kept.sha256) == data
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
    assert deliver(runtime, data).action == "ignored"


# -- robots ---------------------------------------------------------------------------------

@pytest.fixture
def pending_ticket(runtime: Runtime) -> int:
    """Anna's ticket, answered by an agent and now waiting for her."""
    ticket_id = deliver(runtime, "thunderbird-new-ticket").ticket
    answer(runtime, ticket_id, AGENT_REPLY)
    with runtime.sessions.begin() as session:
        change_status_quietly(session, get_ticket(session, ticket_id), PENDING, actor=None)
    return ticket_id


def _waiting(runtime: Runtime, ticket_id: int) -> tuple[str, object, object, int]:
    """What a robot must not change: status, the waiting-on-customer clock, and the mail
    we send (no acknowledgement or notice may answer a robot)."""
    with runtime.sessions() as session:
        found = session.get(Ticket, ticket_id)
        queued = session.scalar(select(func.count()).select_from(Outbox))
        return found.status, found.last_customer_at, found.updated_at, queued


def test_an_out_of_office_reply_is_stored_without_touching_the_ticket(
        runtime: Runtime, pending_ticket: int) -> None:
    before = _waiting(runtime, pending_ticket)
    result = deliver(runtime, "exchange-out-of-office")
    assert (result.action, result.ticket) == ("appended", pending_ticket)
    assert "automatic (Auto-Submitted: auto-generated)" in result.reason
    assert _waiting(runtime, pending_ticket) == before  # still pending, clock not reset
    robot = inbound(show(runtime, pending_ticket))[-1]
    assert robot["auto"] == "auto-generated" and robot["threaded_by"] == "reply-token"


def test_another_ticket_systems_autoreply_does_not_reopen(
        runtime: Runtime, pending_ticket: int) -> None:
    before = _waiting(runtime, pending_ticket)
    result = deliver(runtime, "rt-autoreply")
    assert (result.action, result.ticket) == ("appended", pending_ticket)
    assert _waiting(runtime, pending_ticket) == before
    robot = inbound(show(runtime, pending_ticket))[-1]
    assert (robot["auto"], robot["threaded_by"]) == ("auto-reply", "in-reply-to")


@pytest.mark.parametrize(("robot", "auto", "reason"), [
    ("outlook-read-receipt", "auto-generated",
     "read receipt: multipart/report disposition-notification"),
    ("vacation-precedence-auto-reply", "auto-reply", "Precedence: auto_reply"),
])
def test_a_read_receipt_or_precedence_auto_reply_leaves_a_solved_ticket_solved(
        runtime: Runtime, pending_ticket: int, robot: str, auto: str, reason: str) -> None:
    """F-robot-reopen: neither carries Auto-Submitted, and both used to reopen the ticket."""
    with runtime.sessions.begin() as session:
        change_status_quietly(session, get_ticket(session, pending_ticket), SOLVED, actor=None)
    before = _waiting(runtime, pending_ticket)
    result = deliver(runtime, robot)
    assert (result.action, result.ticket) == ("appended", pending_ticket)
    assert result.reason.endswith(f"; automatic ({reason})")
    assert _waiting(runtime, pending_ticket) == before and before[0] == SOLVED
    stored = inbound(show(runtime, pending_ticket))[-1]
    assert (stored["auto"], stored["threaded_by"]) == (auto, "in-reply-to")


def test_a_bounce_of_our_reply_lands_on_its_ticket(runtime: Runtime, pending_ticket: int) -> None:
    """The DSN returns only the headers of our reply; their Message-ID finds the ticket."""
    ours = "<reply.7.1717603265.9b1c@example.com>"
    answer(runtime, pending_ticket, ours)
    before = _waiting(runtime, pending_ticket)
    result = deliver(runtime, "postfix-dsn-agent-reply")
    assert (result.action, result.ticket) == ("appended", pending_ticket)
    assert _waiting(runtime, pending_ticket) == before
    bounce = inbound(show(runtime, pending_ticket))[-1]
    assert bounce["auto"] == "bounce" and bounce["threaded_ref"] == ours
    assert bounce["from"] == "mailer-daemon@mx.example.com"


def test_a_mailing_list_post_is_a_robot(runtime: Runtime) -> None:
    result = deliver(runtime, "mailman-list-post", recipients=("support@example.com",))
    assert result.action == "created"
    shown = show(runtime, result.ticket)
    assert inbound(shown)[0]["auto"] == "list"
    with runtime.sessions() as session:
        assert session.get(Ticket, result.ticket).last_customer_at is None
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0  # no ack


def test_a_person_asking_out_of_office_is_not_a_robot(runtime: Runtime) -> None:
    result = deliver(runtime, "human-out-of-office-question")
    [message] = inbound(show(runtime, result.ticket))
    assert message["subject"] == "Out of office?" and message["auto"] is None
    with runtime.sessions() as session:
        assert session.get(Ticket, result.ticket).last_customer_at is not None
        assert session.scalars(select(Outbox.kind)).all() == ["acknowledgement"]


# -- reply text -----------------------------------------------------------------------------

REPLIES = {
    "gmail-reply": (
        "<reply.2.1717502520.77c1@example.com>",
        "Hi Maria,\n\nit works again, thank you! The export of the May report finished in a "
        "few\nseconds.\n\nCarlos",
        "On Tue, 4 Jun 2024 at 14:02, Support <support@example.com> wrote:"),
    "outlook-reply-de": (
        AGENT_REPLY,
        "Hallo,\n\nvielen Dank, die Gutschrift ist heute eingegangen. Sie können das Ticket "
        "schließen.\n\nViele Grüße\nAnna Berg",
        "Von: Support <support@example.com>\nGesendet: Montag, 3. Juni 2024 12:03"),
    "apple-mail-reply": (
        "<reply.3.1717506600.2d9e@example.com>",
        "Hallo Maria,\n\ndas Logo ist jetzt richtig, danke! Bitte noch die Rechnung an "
        "buchhaltung@vogel-design.example schicken.\n\nLena",
        "> Am 04.06.2024 um 15:10 schrieb Support <support@example.com>:"),
    "thunderbird-inline-reply": (
        AGENT_REPLY,
        "Am 03.06.24 um 12:03 schrieb Support:\n> Dear Anna,\n>\n> we refunded the second "
        "charge; it should reach your card within 3\n> business days.\n\nThank you. Which "
        "card will the refund go to, the Visa ending 4471?\n\n> Could you also confirm the "
        "billing address for the corrected invoice?\n\nYes: Northwind Traders, Hafenstraße "
        "12, 20457 Hamburg.",
        "> Best regards,\n> Maria from Support\n\n-- \nJonas Weber"),
    "yahoo-de-reply": (  # F-yahoo-de-quote: no ">" on the quoted lines
        "<reply.4.1717596720.8c3d@example.com>",
        "Danke, der Link funktioniert jetzt.\nGruß Klaus",
        "Am Mittwoch, 5. Juni 2024 um 16:12:00 MESZ hat Support <support@example.com> Folgendes"
        " geschrieben:  \n \n Hallo Klaus,"),
}


@pytest.mark.parametrize("name", list(REPLIES))
def test_reply_text_is_the_new_text_and_text_keeps_everything(runtime: Runtime, name: str
                                                              ) -> None:
    answered, new_text, history = REPLIES[name]
    ticket_id = deliver(runtime, "thunderbird-new-ticket").ticket
    answer(runtime, ticket_id, answered)
    result = deliver(runtime, name)
    assert (result.action, result.ticket) == ("appended", ticket_id)
    reply = inbound(show(runtime, ticket_id))[-1]
    assert reply["reply_text"] == new_text
    assert reply["text"].startswith(new_text.split("\n")[0]) and history in reply["text"]
    assert "\r" not in reply["text"]
    assert threaded(show(runtime, ticket_id))[-1] == ("in-reply-to", answered)


def test_raw_rows_are_one_per_distinct_bytes(runtime: Runtime) -> None:
    data = eml("gmail-new-ticket")
    for _ in range(3):
        deliver(runtime, data)
    deliver(runtime, with_headers(data, *IMAP_HOP))
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RawMail)) == 2


def test_a_result_says_whether_its_batch_queued_mail_for_the_sender(runtime: Runtime) -> None:
    """The SMTP listener wakes the sender only for a batch that queued mail: its ingest
    worker commits in another process, where no session event reaches the sender."""
    first = mail("Ann Customer <ann@customer.test>", "Printer on fire",
                 message_id="<first@customer.test>")
    reply = mail("Ann Customer <ann@customer.test>", "Re: Printer on fire", "Still burning.\n",
                 message_id="<second@customer.test>", in_reply_to="<first@customer.test>")
    history = mail("Bob Customer <bob@customer.test>", "Last year's question",
                   message_id="<old@customer.test>")

    opened = deliver(runtime, first)
    assert opened.action == "created" and opened.mail_queued  # the acknowledgement
    answered = deliver(runtime, reply)
    assert answered.action == "appended" and not answered.mail_queued  # nobody to tell
    imported = deliver(runtime, history, kind="import")
    assert imported.action == "created" and not imported.mail_queued  # history: no mail
    again = deliver(runtime, first)
    assert again.action == "duplicate" and not again.mail_queued
    with runtime.sessions() as session:
        assert session.scalars(select(Outbox.kind)).all() == ["acknowledgement"]
