"""Threading through receive(), on SQLite and PostgreSQL: every message lands on the ticket a
person would expect, and `ticket show --json` says by which rule and reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgateway.conversation import is_freemail
from mailgateway.reply_token import reply_address
from mailgateway.runtime import Runtime
from models.changes import merge
from models.schema import Agent, Message
from models.tickets import get_ticket
from tests.mailgateway.ingest_support import (
    ACKNOWLEDGEMENT,
    AGENT_REPLY,
    FIRST_MAIL,
    agent,
    answer,
    deliver,
    eml,
    inbound,
    runtime_with_two_queues,
    set_header,
    show,
    threaded,
)

REPLY_ALL = ("<DB9PR04MB8412A3F4C1D2E5B6C7D8E9F0A1B2C3D4E5F6"
             "@DB9PR04MB8412.eurprd04.prod.outlook.com>")


def open_first_ticket(runtime: Runtime) -> int:
    """Anna's first mail opens ticket 1 (the corpus refers to it as [ACME #1])."""
    result = deliver(runtime, "thunderbird-new-ticket")
    assert (result.action, result.ticket, result.reason) == ("created", 1, "new")
    return result.ticket


def placed_on(runtime: Runtime, ticket_id: int, mail: str | bytes, **envelope: tuple[str, ...]
              ) -> tuple[str, str | None]:
    """Deliver a mail that must join ticket_id; the rule and reference `ticket show` names."""
    result = deliver(runtime, mail, **envelope)
    assert (result.action, result.ticket) == ("appended", ticket_id), result.reason
    return threaded(show(runtime, ticket_id))[-1]


def test_a_reply_threads_by_in_reply_to(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    result = deliver(runtime, "outlook-reply-all-before-original")
    assert (result.action, result.ticket) == ("appended", ticket_id)
    assert result.reason == f"in-reply-to: {FIRST_MAIL}"
    shown = show(runtime, ticket_id)
    assert threaded(shown) == [("new", None), ("in-reply-to", FIRST_MAIL)]
    assert inbound(shown)[1]["message_id"] == REPLY_ALL


def test_a_reply_that_arrives_before_its_parent_ends_on_one_ticket(runtime: Runtime) -> None:
    """Anna's mail was greylisted; Jonas's reply-all to it came first and opened a ticket."""
    reply = deliver(runtime, "outlook-reply-all-before-original")
    assert reply.action == "created"
    parent = deliver(runtime, "thunderbird-new-ticket")
    assert (parent.action, parent.ticket) == ("appended", reply.ticket)
    shown = show(runtime, reply.ticket)
    assert [m["message_id"] for m in inbound(shown)] == [REPLY_ALL, FIRST_MAIL]
    assert threaded(shown) == [("new", None), ("referenced-by", FIRST_MAIL)]
    assert len(show_all_tickets(runtime)) == 1


def conversation_mail(n: int, *, unseen_answers: bool = False) -> bytes:
    """Message n of one conversation, each answering the one before it. With unseen_answers
    the odd messages are an agent's answers sent from a system we never saw: each reply
    names the unseen answer in In-Reply-To and the whole chain in References."""
    from email.message import EmailMessage

    def message_id(k: int) -> str:
        return f"<n{k}@{'helpdesk' if unseen_answers and k % 2 else 'customer'}.test>"

    message = EmailMessage()
    message["From"] = "ann@customer.test"
    message["To"] = "support@example.com"
    message["Subject"] = "Re: the order" if n else "the order"
    message["Message-ID"] = message_id(n)
    if n:
        message["In-Reply-To"] = message_id(n - 1)
        if unseen_answers:
            message["References"] = " ".join(message_id(k) for k in range(n))
    message.set_content(f"Message {n}.")
    return bytes(message)


def one_ticket_after(runtime: Runtime, mails: list[bytes]) -> dict:
    """Deliver the mails one by one; every one of them ends on one live ticket, shown."""
    for data in mails:
        deliver(runtime, data)
    with runtime.sessions() as session:
        live = session.execute(select(Message.ticket_id, Message.message_id)
                               .where(Message.direction == "inbound")).all()
        tickets = {get_ticket(session, t, follow_merge=True).id for t, _ in live}
    assert len(live) == len(mails) and len(tickets) == 1, live
    return show(runtime, tickets.pop())


def test_a_chain_that_arrives_in_a_scrambled_order_ends_on_one_ticket(runtime: Runtime) -> None:
    """Found by a parallel import on PostgreSQL: 3 comes first (a ticket of its own), 2 joins
    it by referenced-by, then 1 arrives and threads onto 0's ticket. 2 was placed by its
    reply, never by its parent, so 3's ticket is still an early reply's, and is adopted."""
    shown = one_ticket_after(runtime, [conversation_mail(n) for n in (0, 3, 2, 1)])
    assert sorted(m["message_id"] for m in inbound(shown)) == [
        f"<n{n}@customer.test>" for n in range(4)]


@pytest.mark.parametrize("order", [(4, 2, 0), (2, 4, 0), (4, 0, 2)])
def test_replies_whose_parents_we_never_saw_arriving_first_end_on_one_ticket(
        runtime: Runtime, order: tuple[int, ...]) -> None:
    """Imported out of order, the replies name no stored message at all (their parents are
    answers we never stored), but their References start at the same first message: one
    conversation, one ticket, whatever the order."""
    shown = one_ticket_after(runtime, [conversation_mail(n, unseen_answers=True)
                                       for n in order])
    assert sorted(m["message_id"] for m in inbound(shown)) == [
        f"<n{n}@customer.test>" for n in (0, 2, 4)]
    assert ("thread-root", "<n0@customer.test>") in threaded(shown)


def test_a_reply_to_our_acknowledgement_threads(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    answer(runtime, ticket_id, ACKNOWLEDGEMENT, system=True)
    assert placed_on(runtime, ticket_id, "thunderbird-reply-to-acknowledgement") == (
        "in-reply-to", ACKNOWLEDGEMENT)
    assert ACKNOWLEDGEMENT in [m["message_id"] for m in show(runtime, ticket_id)["messages"]
                               if m["direction"] == "outbound"]


def test_a_reply_to_an_agents_answer_threads_and_keeps_outlooks_thread_index(
        runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    answer(runtime, ticket_id, AGENT_REPLY)
    assert placed_on(runtime, ticket_id, "outlook-reply-de") == ("in-reply-to", AGENT_REPLY)
    with runtime.sessions() as session:
        stored = session.scalar(select(Message).where(Message.thread_index.is_not(None)))
        assert stored.thread_index == "AQHatYq1c2hMk0d5Tke3bJcJ3QzE0LG3m5WwgAL4aBA="
        assert stored.thread_topic == "[ACME #1] Invoice 2024-0117 charged twice"


def test_a_phone_reply_with_trimmed_references_threads_by_the_newest_known(
        runtime: Runtime) -> None:
    """iPhone Mail kept only the first and the last reference and sent no In-Reply-To;
    both are ours, and the newest one is the one that counts."""
    ticket_id = open_first_ticket(runtime)
    answer(runtime, ticket_id, ACKNOWLEDGEMENT, system=True)
    answer(runtime, ticket_id, AGENT_REPLY)
    data = eml("iphone-reply-trimmed-references")
    assert b"In-Reply-To" not in data
    assert placed_on(runtime, ticket_id, data) == ("references", AGENT_REPLY)


def test_a_signed_reply_token_threads_without_headers_or_tag(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    token = reply_address("support@example.com", ticket_id, runtime.settings.secret_key)
    data = eml("reply-token-only")
    assert token.encode() in data and b"In-Reply-To" not in data and b"[ACME" not in data
    assert placed_on(runtime, ticket_id, data) == ("reply-token", token)


def test_the_token_in_the_envelope_alone_is_enough(runtime: Runtime) -> None:
    """A Bcc or a forwarding rule: the token is only in RCPT TO, not in the headers."""
    ticket_id = open_first_ticket(runtime)
    token = reply_address("support@example.com", ticket_id, runtime.settings.secret_key)
    data = set_header(eml("reply-token-only"), "To", "Support <support@example.com>")
    assert placed_on(runtime, ticket_id, data, recipients=(token,)) == ("reply-token", token)


def test_a_forged_reply_token_opens_a_new_ticket(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    token = reply_address("support@example.com", ticket_id, runtime.settings.secret_key)
    forged = token.replace(token.split("-")[1].split("@")[0], "aaaaaaaaaa")
    assert forged != token
    result = deliver(runtime, eml("reply-token-only").replace(token.encode(), forged.encode()))
    assert result.action == "created" and result.ticket != ticket_id
    assert threaded(show(runtime, result.ticket)) == [("new", None)]
    assert show(runtime, result.ticket)["queue"] == "Support"
    assert len(inbound(show(runtime, ticket_id))) == 1


@pytest.mark.parametrize("prefix", ["AW:", "Re: RE:", "SV:", "Antw:", "=?UTF-8?B?5Zue5aSNOg==?="])
def test_a_ccd_participant_writes_by_subject_tag_after_any_prefix(
        runtime: Runtime, prefix: str) -> None:
    """Jonas was in Cc of the first mail, so he is a participant; his new mail carries only
    the tag behind whatever his client put in front (the last is 回复:, Chinese for Re:)."""
    ticket_id = open_first_ticket(runtime)
    assert {"address": "jonas.weber@northwind.example", "name": "Jonas Weber", "role": "cc"} in (
        show(runtime, ticket_id)["participants"])
    data = set_header(eml("outlook-mobile-tag-only"), "Subject",
                      f"{prefix} [ACME #1] Invoice 2024-0117 charged twice")
    assert placed_on(runtime, ticket_id, data) == ("subject-tag", "[ACME #1]")


def test_the_requester_in_capitals_is_still_the_same_person(runtime: Runtime) -> None:
    """One contact per address, whatever its case; her display name comes from the header."""
    ticket_id = open_first_ticket(runtime)
    data = set_header(eml("outlook-mobile-tag-only"), "From",
                      "\"Berg, Anna\" <Anna.Berg@NORTHWIND.example>")
    assert placed_on(runtime, ticket_id, data) == ("subject-tag", "[ACME #1]")
    shown = show(runtime, ticket_id)
    assert inbound(shown)[-1]["from"] == "anna.berg@northwind.example"
    assert [(p["address"], p["name"]) for p in shown["participants"]] == [
        ("anna.berg@northwind.example", "Anna Berg"),
        ("jonas.weber@northwind.example", "Jonas Weber")]


def test_a_stranger_with_the_tag_opens_a_new_ticket_that_records_it(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    assert is_freemail("gmail.com")
    result = deliver(runtime, "gmail-stranger-forward")
    assert result.action == "created" and result.ticket != ticket_id
    shown = show(runtime, result.ticket)
    assert threaded(shown) == [("new", "[ACME #1] (sender is not a participant)")]
    assert shown["requester"] == "mark.stone1987@gmail.com"
    assert len(inbound(show(runtime, ticket_id))) == 1


def test_mail_without_any_sender_cannot_use_the_tag_of_another_such_mail(
        runtime: Runtime) -> None:
    """Mail with no From and no Return-Path shares the one empty-address contact: it is no
    proof of being a participant, or any sender-less mail could write into the ticket of
    another by its tag."""
    nobody = set_header(eml("cron-missing-headers"), "Return-Path", None)  # and no From
    first = deliver(runtime, nobody)
    assert first.action == "created"
    tagged = set_header(nobody.replace(b"rsync to nas01", b"let me in"), "Subject",
                        f"Re: [ACME #{first.ticket}] backup")
    second = deliver(runtime, tagged)
    assert second.action == "created" and second.ticket != first.ticket, second
    assert "sender is not a participant" in second.reason

@pytest.mark.parametrize("number", ["42", "99999999999"])
def test_a_tag_naming_no_ticket_opens_a_new_one(runtime: Runtime, number: str) -> None:
    """Regression: past the 32-bit id range PostgreSQL refused the lookup, so the mail was
    never stored (a TemporaryFailure for ever, later a quarantine)."""
    open_first_ticket(runtime)
    data = set_header(eml("outlook-mobile-tag-only"), "Subject", f"AW: [ACME #{number}] Invoice")
    result = deliver(runtime, data)
    assert result.action == "created", result.reason
    assert threaded(show(runtime, result.ticket)) == [
        ("new", f"[ACME #{number}] (no such ticket)")]


def test_a_colleague_at_the_requesters_company_forwarding_threads(runtime: Runtime) -> None:
    ticket_id = open_first_ticket(runtime)
    assert placed_on(runtime, ticket_id, "outlook-colleague-forward") == (
        "subject-tag", "[ACME #1]")


def test_a_colleague_at_a_freemail_requesters_domain_does_not(runtime: Runtime) -> None:
    """Two people at gmail.com are not colleagues: the domain rule is for company domains."""
    carlos = deliver(runtime, "gmail-new-ticket")
    data = set_header(eml("gmail-stranger-forward"), "Subject",
                      f"Fwd: [ACME #{carlos.ticket}] CSV export fails with Error 500")
    result = deliver(runtime, data)
    assert result.action == "created" and result.ticket != carlos.ticket


def test_a_stranger_at_a_freemail_provider_abroad_is_no_colleague(runtime: Runtime) -> None:
    """Found by QA: hotmail.co.uk was missing from a list of exact domains, so anyone there
    could write into another hotmail.co.uk customer's ticket by guessing its number."""
    jane = deliver(runtime, "hotmail-uk-new-ticket")
    eve = deliver(runtime, "hotmail-uk-stranger-with-tag")
    assert (eve.action, eve.reason) == ("created", "new: [ACME #1] (sender is not a participant)")
    assert eve.ticket != jane.ticket


@pytest.mark.parametrize(("domain", "free"), [
    ("hotmail.co.uk", True), ("yahoo.com.br", True), ("gmx.at", True), ("outlook.de", True),
    ("pm.me", True), ("comcast.net", True), ("acme.com", False), ("mail.acme.co.uk", False),
    ("comcast.com", False), ("co.uk", False)])
def test_free_mail_is_known_by_its_brand_in_any_country(domain: str, free: bool) -> None:
    assert is_freemail(domain) is free


def test_strangers_replying_to_one_mass_mailing_get_a_ticket_each(runtime: Runtime) -> None:
    """Found by QA: two customers answered one newsletter we never stored; the second reply
    joined the first one's ticket by its References' first message (thread-root), where an
    agent's answer would have gone to the wrong customer."""
    carla = deliver(runtime, "gmail-reply-to-newsletter")
    bob = deliver(runtime, "apple-mail-reply-to-newsletter")
    assert (carla.action, bob.action) == ("created", "created")
    assert bob.ticket != carla.ticket
    assert show(runtime, bob.ticket)["requester"] == "b.stone@stone-consulting.example"


def test_the_same_customer_answering_a_mass_mailing_again_stays_on_her_ticket(
        runtime: Runtime) -> None:
    carla = deliver(runtime, "gmail-reply-to-newsletter")
    again = set_header(set_header(eml("gmail-reply-to-newsletter"), "Message-ID",
                                  "<CAJ1carla+bbbb@mail.gmail.com>"), "Date",
                       "Tue, 12 Mar 2024 11:00:00 +0100")
    result = deliver(runtime, again)
    assert (result.action, result.ticket) == ("appended", carla.ticket)
    assert result.reason == "thread-root: <20240311.news.5f2a9c@mail.acme-news.example>"


@pytest.fixture
def two_queues(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    yield from runtime_with_two_queues(tmp_path, database_url)


def test_a_new_ticket_goes_to_the_queue_whose_address_received_it(two_queues: Runtime) -> None:
    billing = deliver(two_queues, "billing-new")
    assert show(two_queues, billing.ticket)["queue"] == "Billing"
    support = deliver(two_queues, "thunderbird-new-ticket")
    assert show(two_queues, support.ticket)["queue"] == "Support"
    # the envelope knows best: a Bcc to billing@ whose headers name no queue of ours
    bcc = set_header(eml("gmail-new-ticket"), "To", "Carlos Mendes <carlos.mendes@gmail.com>")
    routed = deliver(two_queues, bcc, recipients=("billing@example.com",))
    assert show(two_queues, routed.ticket)["queue"] == "Billing"


def test_mail_for_a_merged_ticket_lands_on_the_ticket_it_was_merged_into(
        runtime: Runtime) -> None:
    anna = open_first_ticket(runtime)
    carlos = deliver(runtime, "gmail-new-ticket").ticket
    assert carlos == 2  # gmail-reply carries the reply token and tag of ticket 2
    agent_id = agent(runtime)
    with runtime.sessions.begin() as session:
        merge(session, get_ticket(session, carlos), get_ticket(session, anna),
              actor=session.get(Agent, agent_id))
    # his client dropped In-Reply-To and References; the token in To names ticket 2
    data = set_header(set_header(eml("gmail-reply"), "In-Reply-To", None), "References", None)
    rule, ref = placed_on(runtime, anna, data)
    assert rule == "reply-token" and ref.startswith("support+t2-")
    assert show(runtime, carlos)["merged_into"] == anna


def show_all_tickets(runtime: Runtime) -> list[int]:
    from models.schema import Ticket

    with runtime.sessions() as session:
        return list(session.scalars(select(Ticket.id)))


def test_our_own_addresses_in_cc_never_become_participants(runtime: Runtime) -> None:
    """A customer copying sales@ (a domain we accept) or our reply-token address must not make
    us a participant: our replies would be copied back to ourselves."""
    data = set_header(eml("outlook-mobile-tag-only"), "Subject", "Fresh question")
    data = set_header(data, "Message-ID", "<cc-ours@northwind.example>")
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    data = (b"Cc: Sales <sales@example.com>, support+t9-abcdefghij@example.com, "
            b"Jonas Weber <jonas.weber@northwind.example>" + newline + data)
    result = deliver(runtime, data)
    assert result.action == "created"
    addresses = [p["address"] for p in show(runtime, result.ticket)["participants"]]
    assert "jonas.weber@northwind.example" in addresses
    assert not [a for a in addresses if a.endswith("@example.com")], addresses


def test_a_reply_that_came_before_its_parent_joins_the_conversation(runtime: Runtime) -> None:
    """g <- p <- c arriving g, c, p: c finds nothing and opens a ticket; when p arrives it
    threads onto g's ticket by its own In-Reply-To, and c's ticket is merged into it."""
    from email.message import EmailMessage

    def mail(mid: str, parent: str | None) -> bytes:
        message = EmailMessage()
        message["From"] = "ann@northwind.example"
        message["To"] = "support@example.com"
        message["Subject"] = "Printer"
        message["Message-ID"] = f"<{mid}@northwind.example>"
        if parent:
            message["In-Reply-To"] = f"<{parent}@northwind.example>"
        message.set_content(f"This is {mid}.")
        return bytes(message)

    g = deliver(runtime, mail("g", None))
    c = deliver(runtime, mail("c", "p"))
    assert c.action == "created" and c.ticket != g.ticket  # its parent is not here yet
    p = deliver(runtime, mail("p", "g"))
    assert p.ticket == g.ticket
    shown = show(runtime, g.ticket)
    assert {m["message_id"] for m in shown["messages"] if m["direction"] == "inbound"} == {
        "<g@northwind.example>", "<p@northwind.example>", "<c@northwind.example>"}
    assert show(runtime, c.ticket)["merged_into"] == g.ticket
