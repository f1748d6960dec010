"""Mail the gateway sends by itself: the acknowledgement of a new ticket and agents' notices.

Called in the transaction that stored the customer's message (or assigned the ticket), so
the outbox rows exist exactly when the change does. Every rule that withholds an
acknowledgement is a named predicate: an acknowledgement to a robot, a list or ourselves is
how mail loops start, and the per-sender hourly cap stops any loop we did not foresee.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.contacts import normalize_address
from models.outbox import Kind, enqueue, new_message_id, with_ids
from models.replies import mail_context, reply_subject, threading_context
from models.schema import (
    Agent,
    Contact,
    Direction,
    Event,
    Message,
    Outbox,
    Suppression,
    Ticket,
    utcnow,
)
from models.tickets import MessageDraft, add_system_message


@dataclass(frozen=True)
class FollowupPolicy:
    """The parts of config.toml these rules read; built by the caller from its Settings."""

    tag: str = "ACME"
    acknowledge: bool = True
    acknowledged_queues: frozenset[str] = frozenset()  # queue names with acknowledge = true
    max_acks_per_sender_per_hour: int = 3
    noreply_patterns: tuple[str, ...] = ()
    our_addresses: frozenset[str] = frozenset()
    notify_new_ticket: bool = True
    notify_assigned: bool = True
    notify_customer_reply: bool = True
    ticket_url: str = ""  # "<base_url>/tickets/{id}" for links in notifications
    now: Callable[[], datetime] = field(default=utcnow, compare=False)


@dataclass(frozen=True)
class Followups:
    queued: list[Outbox]
    skipped: list[str]  # why an acknowledgement or notice was not sent, for the log


@dataclass
class Facts:
    """What the rules ask of the database about the people of a batch, asked once for all of
    them: whose automatic mail is paused, how many acknowledgements each sender had this
    hour (counted on as the batch queues more), the active agents."""

    suppressed: dict[str, datetime]  # address -> until, only pauses still running
    acks_this_hour: Counter[str]
    agents: list[Agent]


def facts_about(session: Session, senders: Iterable[str], policy: FollowupPolicy) -> Facts:
    """At most three queries, whatever the batch's size: the rules then ask nothing more."""
    now = policy.now()
    senders = {normalize_address(a) for a in senders}
    agents = list(session.scalars(
        select(Agent).where(Agent.active.is_(True)).order_by(Agent.id)))
    addresses = senders | {normalize_address(a.email) for a in agents}
    suppressed = {address: until for address, until in session.execute(
        select(Suppression.address, Suppression.until)
        .where(Suppression.address.in_(addresses), Suppression.until > now))}
    counts = session.execute(
        select(Contact.email, func.count(Outbox.id)).join(Ticket, Ticket.id == Outbox.ticket_id)
        .join(Contact, Contact.id == Ticket.requester_id)
        .where(Contact.email.in_(senders), Outbox.kind == Kind.ACKNOWLEDGEMENT,
               Outbox.created_at >= now - timedelta(hours=1))
        .group_by(Contact.email)) if senders else []  # an assignment: no sender to count
    return Facts(suppressed, Counter({email: count for email, count in counts}), agents)


AckRule = Callable[[Ticket, Message, FollowupPolicy, Facts], str | None]


def acks_switched_off(ticket: Ticket, message: Message, policy: FollowupPolicy,
                      facts: Facts) -> str | None:
    """[acknowledgement] enabled, and the queue's own acknowledge switch."""
    if not policy.acknowledge:
        return "acknowledgements are switched off"
    if ticket.queue.name not in policy.acknowledged_queues:
        return f"queue {ticket.queue.name} does not acknowledge"
    return None


def no_sender(ticket: Ticket, message: Message, policy: FollowupPolicy,
              facts: Facts) -> str | None:
    """No From and no Return-Path (a cron job, a broken script): no one to answer."""
    return None if message.from_address.strip() else "the message names no sender"


def written_by_robot(ticket: Ticket, message: Message, policy: FollowupPolicy,
                     facts: Facts) -> str | None:
    """RFC 3834 5.: never answer an auto-reply, a bounce or a list: two robots loop."""
    return f"the message is automatic ({message.auto})" if message.auto else None


def from_ourselves(ticket: Ticket, message: Message, policy: FollowupPolicy,
                   facts: Facts) -> str | None:
    """Our own address, with or without a +tag (reply token, VERP): we would answer ourselves."""
    sender = message.from_address.lower()
    local, _, domain = sender.partition("@")
    if sender in policy.our_addresses or f"{local.split('+')[0]}@{domain}" in policy.our_addresses:
        return f"{sender} is one of our addresses"
    return None


def from_noreply(ticket: Ticket, message: Message, policy: FollowupPolicy,
                 facts: Facts) -> str | None:
    """Addresses that say no one reads them ([acknowledgement] noreply_patterns)."""
    sender = message.from_address.lower()
    hit = next((p for p in policy.noreply_patterns if fnmatch.fnmatchcase(sender, p.lower())),
               None)
    return f"{sender} matches the no-reply pattern {hit}" if hit else None


def sender_suppressed(ticket: Ticket, message: Message, policy: FollowupPolicy,
                      facts: Facts) -> str | None:
    """A hard bounce paused automatic mail to this address."""
    until = facts.suppressed.get(normalize_address(message.from_address))
    return f"{message.from_address} is suppressed until {until:%Y-%m-%d %H:%M}" if until else None


def over_hourly_limit(ticket: Ticket, message: Message, policy: FollowupPolicy,
                      facts: Facts) -> str | None:
    """At most N acknowledgements an hour to one sender: whatever loop we did not foresee
    stops here. Counted from the outbox through the tickets the sender opened (indexed)."""
    sent = facts.acks_this_hour[normalize_address(message.from_address)]
    if sent < policy.max_acks_per_sender_per_hour:
        return None
    return f"{message.from_address} had {sent} acknowledgements this hour"


ACK_RULES: list[AckRule] = [acks_switched_off, no_sender, written_by_robot, from_ourselves,
                            from_noreply, sender_suppressed, over_hourly_limit]


def acknowledge(session: Session, ticket: Ticket, message: Message, policy: FollowupPolicy,
                facts: Facts) -> Outbox | str:
    """The acknowledgement of a new ticket (an outbox row and a Message on the ticket, so a
    reply to it threads), or the reason none is sent."""
    for rule in ACK_RULES:
        reason = rule(ticket, message, policy, facts)
        if reason:
            return reason
    facts.acks_this_hour[normalize_address(message.from_address)] += 1
    queue = ticket.queue
    rfc_id = new_message_id(queue.address)
    threading = threading_context(message)
    draft = MessageDraft(
        direction=Direction.OUTBOUND, dedup_key=rfc_id, message_id=rfc_id,
        from_address=queue.address, to=[message.from_address],
        subject=reply_subject(message.subject or ticket.subject, policy.tag, ticket.id),
        text=f"Acknowledgement of ticket #{ticket.id} sent to {message.from_address}.",
        in_reply_to=threading["in_reply_to"], references=threading["references"],
        thread_topic=threading["thread_topic"], auto="acknowledgement",
        auto_reason="sent by the gateway for a new ticket",
    )
    stored = add_system_message(session, ticket, draft)
    values = {**_ticket_values(ticket, policy),
              "customer_name": message.from_name or ticket.requester.name}
    return enqueue(session, kind=Kind.ACKNOWLEDGEMENT, recipients=draft.to, rfc_message_id=rfc_id,
                   ticket=ticket, message=stored,
                   context=mail_context("acknowledgement", queue.name, draft, threading,
                                        values=values, auto="auto-replied"))


def after_customer_message(session: Session, ticket: Ticket, message: Message, *,
                           created: bool, policy: FollowupPolicy,
                           facts: Facts | None = None) -> Followups:
    """What a person's mail on a ticket sets off: the acknowledgement of a new ticket, and
    the notices to agents. A robot's mail sets off nothing. `facts`: a batch's, asked once."""
    if message.auto:
        return Followups([], [f"automatic message ({message.auto}): no follow-ups"])
    with_ids(session, ticket, message)
    facts = facts or facts_about(session, [message.from_address], policy)
    queued: list[Outbox] = []
    skipped: list[str] = []
    if created:
        ack = acknowledge(session, ticket, message, policy, facts)
        (queued if isinstance(ack, Outbox) else skipped).append(ack)
    if created and policy.notify_new_ticket:
        agents = [ticket.assignee] if ticket.assignee else facts.agents
        queued += _notify(session, ticket, agents, "notification_new_ticket", policy, facts,
                          message=message)
    elif not created and policy.notify_customer_reply and ticket.assignee:
        queued += _notify(session, ticket, [ticket.assignee], "notification_customer_reply",
                          policy, facts, message=message)
    return Followups(queued, skipped)


def after_customer_messages(session: Session, stored: Sequence[tuple[Ticket, Message, bool]],
                            policy: FollowupPolicy) -> list[Followups]:
    """after_customer_message for a batch of (ticket, message, created), its facts asked
    once for all."""
    facts = facts_about(session, [m.from_address for _, m, _ in stored], policy)
    return [after_customer_message(session, ticket, message, created=created, policy=policy,
                                   facts=facts) for ticket, message, created in stored]


def after_assignment(session: Session, ticket: Ticket, event: Event | None, *,
                     actor: Agent, policy: FollowupPolicy) -> Followups:
    """Tell the new assignee, unless they took the ticket themselves."""
    with_ids(session, ticket)
    assignee = ticket.assignee
    if event is None or assignee is None or not policy.notify_assigned:
        return Followups([], [])
    if assignee.id == actor.id:
        return Followups([], [f"{assignee.email} assigned the ticket to themselves"])
    facts = facts_about(session, [], policy)
    return Followups(_notify(session, ticket, [assignee], "notification_assigned", policy,
                             facts, by=actor.name or actor.email), [])


def _notify(session: Session, ticket: Ticket, agents: list[Agent], template: str,
            policy: FollowupPolicy, facts: Facts, *, message: Message | None = None,
            by: str = "") -> list[Outbox]:
    """One notice per agent (each its own Message-ID); automatic mail, so never answered."""
    rows = []
    text = (message.reply_text or message.text) if message else ""
    values = {**_ticket_values(ticket, policy), "customer": ticket.requester.email, "by": by,
              "from": message.from_address if message else "", "text": text[:4000],
              "url": policy.ticket_url.format(id=ticket.id) if policy.ticket_url else ""}
    for agent in agents:
        if not agent.active or normalize_address(agent.email) in facts.suppressed:
            continue
        rfc_id = new_message_id(ticket.queue.address)
        draft = MessageDraft(direction=Direction.OUTBOUND, dedup_key=rfc_id,
                             from_address=ticket.queue.address, to=[agent.email],
                             subject=f"[{policy.tag} #{ticket.id}] {ticket.subject}")
        rows.append(enqueue(
            session, kind=Kind.NOTIFICATION, recipients=[agent.email], rfc_message_id=rfc_id,
            ticket=ticket, context=mail_context(template, ticket.queue.name, draft,
                                                threading_context(None), values=values,
                                                auto="auto-generated")))
    return rows


def _ticket_values(ticket: Ticket, policy: FollowupPolicy) -> dict:
    """What every template may show of the ticket (the subject on one line)."""
    return {"ticket_id": ticket.id, "subject": " ".join(ticket.subject.split()),
            "tag": policy.tag, "queue": ticket.queue.name}

