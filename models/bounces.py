"""Bounces of our own mail, and the suppression list they feed.

A delivery status notification names the outbox row that failed (VERP or its Message-ID);
it is stored on that row's ticket as a delivery failure of that mail and never opens a
ticket of its own. A hard bounce pauses automatic mail (acknowledgements, notifications)
to the address, so an autoresponder loop or a dead mailbox does not keep us sending;
agents' replies still go, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.contacts import normalize_address
from models.customer_mail import add_customer_message
from models.outbox import fail
from models.schema import Message, Outbox, OutboxState, Suppression, utcnow
from models.tickets import MessageDraft, get_ticket


@dataclass(frozen=True)
class BounceReport:
    """What a DSN says about one of our mails; the gateway reads it, the models record it."""

    status: str  # "5.1.1"
    diagnostic: str
    recipient: str | None
    permanent: bool  # a hard bounce; a delayed DSN is not

    @property
    def summary(self) -> str:
        who = f"{self.recipient}: " if self.recipient else ""
        return f"{who}{self.status} {self.diagnostic}".strip()


def suppress(session: Session, address: str, *, days: int, reason: str,
             now: datetime | None = None) -> Suppression | None:
    """Pause automatic mail to an address for `days` (0 or less: never suppress)."""
    if days <= 0:
        return None
    address = normalize_address(address)
    until = (now or utcnow()) + timedelta(days=days)
    row = session.get(Suppression, address)
    if row is None:
        try:
            with session.begin_nested():
                row = Suppression(address=address, until=until, reason=reason[:2000])
                session.add(row)
            return row
        except IntegrityError:  # another process suppressed it at the same moment
            row = session.get(Suppression, address, populate_existing=True)
            assert row is not None
    row.until, row.reason = max(row.until, until), reason[:2000]
    return row


def suppressed_until(session: Session, address: str, *, now: datetime | None = None
                     ) -> datetime | None:
    """The end of an address's suppression, or None when mail to it may go."""
    until = session.scalar(select(Suppression.until).where(
        Suppression.address == normalize_address(address)))
    return until if until and until > (now or utcnow()) else None


def find_bounced_outbox(session: Session, *, outbox_id: int | None,
                        message_ids: list[str]) -> Outbox | None:
    """The mail a DSN reports: by its verified VERP id first, else by a Message-ID we sent."""
    if outbox_id is not None:
        row = session.get(Outbox, outbox_id)
        if row is not None:
            return row
    ids = [m for m in message_ids if m]
    if not ids:
        return None
    return session.scalar(select(Outbox).where(Outbox.rfc_message_id.in_(ids)).limit(1))


def record_bounce(session: Session, row: Outbox, draft: MessageDraft, report: BounceReport,
                  *, suppress_days: int) -> Message | None:
    """The DSN on the bounced mail's ticket, marked as the failure of that mail; a hard
    bounce fails the row (Event on the ticket) and suppresses the address; a delayed one is
    only recorded. Returns the stored Message, None when the row has no ticket to carry it."""
    if report.permanent:
        if row.state != OutboxState.FAILED:
            fail(session, row, f"bounced: {report.summary}")
        for address in _bounced_addresses(row, report):
            suppress(session, address, days=suppress_days, reason=f"bounce: {report.summary}")
    if row.ticket_id is None:
        return None
    ticket = get_ticket(session, row.ticket_id, follow_merge=True)
    draft = replace(draft, bounce_of_id=row.id, auto="bounce",
                    auto_reason=draft.auto_reason or f"delivery report: {report.summary}")
    return add_customer_message(session, ticket, draft)


def _bounced_addresses(row: Outbox, report: BounceReport) -> list[str]:
    """The reported recipient when the DSN names one, else the mail's only recipient."""
    if report.recipient:
        return [report.recipient]
    return list(row.recipients) if len(row.recipients) == 1 else []
