"""The outbound side's steps in the ingest pipeline, and the follow-up policy they read.

queue_followups  6 follow-ups: a person's mail sets off the acknowledgement of a new ticket
                 and the agents' notices, in the transaction that stored it.
bounced_outbox   before threading: a delivery status notification about one of our own
                 mails is matched to that outbox row (VERP first, then the Message-ID it
                 reports) and recorded as that mail's failure; it never opens a ticket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mailgateway.classify import DeliveryReport
from mailgateway.config import Settings
from mailgateway.parse import ParsedMail
from mailgateway.reply_token import outbox_from_bounce_address
from models.bounces import BounceReport, find_bounced_outbox
from models.followups import FollowupPolicy, after_customer_messages
from models.schema import Message, Outbox, Ticket

if TYPE_CHECKING:
    from mailgateway.ingest import Stored


def followup_policy(settings: Settings) -> FollowupPolicy:
    """What models/followups.py reads of [acknowledgement], [notifications], [[queues]]."""
    ack, notify, web = settings.acknowledgement, settings.notifications, settings.web
    base_url = (web.base_url or f"http://{web.host}:{web.port}").rstrip("/")
    return FollowupPolicy(
        tag=settings.tickets.tag,
        acknowledge=ack.enabled,
        acknowledged_queues=frozenset(q.name for q in settings.queues if q.acknowledge),
        max_acks_per_sender_per_hour=ack.max_per_sender_per_hour,
        noreply_patterns=tuple(ack.noreply_patterns),
        our_addresses=settings.our_addresses,
        notify_new_ticket=notify.new_ticket,
        notify_assigned=notify.assigned,
        notify_customer_reply=notify.customer_reply,
        ticket_url=f"{base_url}/tickets/{{id}}",
    )


def queue_followups(session: Session, stored: Sequence[Stored], settings: Settings) -> None:
    """A person's mail: acknowledge a new ticket, tell the agents. A robot's: nothing, and
    neither does imported history (an mbox of last year must not mail every customer)."""
    people = [s for s in stored if not s.verdict.auto and not str(s.source).startswith("import")]
    if not people:
        return
    tickets = {t.id: t for t in session.scalars(
        select(Ticket).options(selectinload(Ticket.requester), selectinload(Ticket.assignee))
        .where(Ticket.id.in_({s.ticket_id for s in people})))}
    messages = {m.id: m for m in session.scalars(
        select(Message).where(Message.id.in_([s.message_id for s in people])))}
    after_customer_messages(
        session, [(tickets[s.ticket_id], messages[s.message_id], s.created) for s in people],
        followup_policy(settings))


@dataclass(frozen=True)
class BouncedMail:
    row: Outbox
    report: BounceReport
    ref: str  # how it was matched, for threaded_ref


def bounced_outbox(session: Session, settings: Settings, mail: ParsedMail,
                   recipients: Sequence[str], report: DeliveryReport | None) -> BouncedMail | None:
    """The outbox row a DSN reports, if it is one of ours and still on a ticket: a verified
    VERP address among the envelope recipients or To (each outbound mail has its own), else
    the original Message-ID the report quotes."""
    secret = settings.secret_key
    addresses = [*recipients, *(a for _, a in mail.to)]
    verp = next((i for i in (outbox_from_bounce_address(a, secret) for a in addresses) if i),
                None)
    original = report.original_message_id if report else None
    row = find_bounced_outbox(session, outbox_id=verp, message_ids=[original or ""])
    if row is None or row.ticket_id is None:
        return None
    ref = f"outbox {row.id} by VERP" if verp == row.id else f"outbox {row.id} by {original}"
    if report is None:  # a bounce we cannot read: recorded, the mail not failed on a guess
        return BouncedMail(row, BounceReport("", "unreadable delivery report", None, False), ref)
    return BouncedMail(row, BounceReport(report.status, report.diagnostic, report.recipient,
                                         report.permanent and report.action == "failed"), ref)
