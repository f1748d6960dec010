"""The outbox: every outgoing mail as a row, written in the transaction that caused it.

A row's life: queued -> sending (claimed under a lease) -> sent | queued again (retry) | failed.
The Message-ID is fixed at enqueue, so threading and bounce matching work before the mail
leaves. Delivery guarantee, stated plainly:

- a sender marks a row sent in its own commit right after the relay's 250, so a restart
  never sends a delivered mail again;
- a sender that dies while holding a row leaves it "sending" until its lease runs out; then
  any sender takes it again. If the death fell between the relay's 250 and that commit, the
  mail goes out twice: at-least-once in that one window, never a lost mail;
- each claim's lease deadline is its fencing token: a sender whose lease ran out and was
  taken over cannot mark the row any more (mark_* match on it and change nothing).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session

from models.db import new_ids
from models.errors import Conflict, NotFound
from models.events import EventKind, record_event
from models.schema import Message, Outbox, OutboxState, Ticket, utcnow

MAX_RETRY_DELAY = timedelta(hours=12)
ERROR_CHARS = 2000
QUEUED_FLAG = "outbox_queued"  # in Session.info: this transaction queued mail


class Kind:
    REPLY = "reply"
    ACKNOWLEDGEMENT = "acknowledgement"
    NOTIFICATION = "notification"


@dataclass(frozen=True)
class Claim:
    """A row taken for sending, and the lease that proves this sender still holds it."""

    outbox_id: int
    lease_until: datetime


def new_message_id(address: str) -> str:
    """`<random@domain of address>`: unique, not guessable, and in a domain that is ours."""
    domain = address.rpartition("@")[2].strip().lower() or "mailgateway.invalid"
    return f"<{secrets.token_hex(16)}@{domain}>"


def enqueue(
    session: Session, *, kind: str, recipients: Sequence[str], context: dict,
    rfc_message_id: str, ticket: Ticket | None = None, message: Message | None = None,
) -> Outbox:
    """One outgoing mail, queued in the caller's transaction; it leaves after the commit.
    Its id is known at once, the row written at the next flush (a batch's acknowledgements
    with one statement, not a flush each)."""
    with_ids(session, ticket, message)
    row = Outbox(
        id=new_ids(session, Outbox.__table__, 1)[0], kind=kind,
        ticket_id=ticket.id if ticket else None, message=message,
        message_row_id=message.id if message else None,
        rfc_message_id=rfc_message_id, recipients=[r.strip().lower() for r in recipients],
        context=context, state=OutboxState.QUEUED, attempts=0, next_attempt_at=utcnow(),
    )
    session.add(row)
    session.info[QUEUED_FLAG] = True  # the sender, listening for commits, wakes up
    return row


def with_ids(session: Session, *rows: Ticket | Message | None) -> None:
    """Domain operations leave flushing to the caller; ids are needed from here on."""
    if any(r is not None and r.id is None for r in rows):
        session.flush()


def queued_mail(session: Session) -> bool:
    """Whether this transaction queued mail (before its commit: a sender listening in this
    process takes the flag when the commit happens)."""
    return bool(session.info.get(QUEUED_FLAG))


def claim_due(session: Session, *, lease_seconds: int, limit: int = 20,
              now: datetime | None = None) -> list[Claim]:
    """Take up to `limit` rows that are due, or whose sender's lease ran out, for this sender.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so senders in several processes share the work
    without waiting on each other. SQLite renders no locking clause; its BEGIN IMMEDIATE
    already serialises the select and the update (one writer at a time)."""
    now = now or utcnow()
    due = or_(
        (Outbox.state == OutboxState.QUEUED) & (Outbox.next_attempt_at <= now),
        (Outbox.state == OutboxState.SENDING) & (Outbox.lease_until < now),
    )
    ids = list(session.scalars(
        select(Outbox.id).where(due).order_by(Outbox.next_attempt_at, Outbox.id).limit(limit)
        .with_for_update(skip_locked=True)))
    if not ids:
        return []
    lease = now + timedelta(seconds=lease_seconds)
    session.execute(
        update(Outbox).where(Outbox.id.in_(ids))
        .values(state=OutboxState.SENDING, lease_until=lease, attempts=Outbox.attempts + 1)
        .execution_options(synchronize_session=False))
    return [Claim(i, lease) for i in ids]


def _holds(claim: Claim) -> ColumnElement[bool]:
    """The claim's fence: the row is still sending under this very lease."""
    return ((Outbox.id == claim.outbox_id) & (Outbox.state == OutboxState.SENDING)
            & (Outbox.lease_until == claim.lease_until))


def held(session: Session, claim: Claim) -> Outbox | None:
    """The row, if this claim still holds it (state sending, same lease)."""
    return session.scalar(select(Outbox).where(_holds(claim)))


def held_rows(session: Session, claims: Sequence[Claim]) -> dict[int, Outbox]:
    """A sender's whole batch in one read: the rows its claims still hold, by id."""
    if not claims:
        return {}
    return {row.id: row for row in session.scalars(
        select(Outbox).where(or_(*(_holds(claim) for claim in claims))))}


def mark_sent(session: Session, claim: Claim, *, note: str = "",
              now: datetime | None = None) -> bool:
    """Right after the relay's 250, in its own commit. False: the lease was lost meanwhile.
    One fenced UPDATE (no row loaded): the sender's part of a busy gateway's write lock."""
    sent_at = now or utcnow()
    marked = session.execute(
        update(Outbox).where(_holds(claim))
        .values(state=OutboxState.SENT, sent_at=sent_at, lease_until=None,
                last_error=note[:ERROR_CHARS])
        .returning(Outbox.message_row_id).execution_options(synchronize_session=False)).first()
    if marked is None:
        return False
    if marked.message_row_id:  # the conversation shows when our mail left
        session.execute(update(Message).where(Message.id == marked.message_row_id)
                        .values(sent_at=sent_at).execution_options(synchronize_session=False))
    return True


def mark_retry(session: Session, claim: Claim, error: str, *, retry_delay: int,
               max_attempts: int, now: datetime | None = None) -> str | None:
    """A temporary failure: queued again after retry_delay * 2**(attempts-1), +-20 % so a
    relay that comes back is not hit by every mail in the same second; the last allowed
    attempt fails the mail instead. Returns the new state, None when the lease was lost."""
    row = held(session, claim)
    if row is None:
        return None
    if row.attempts >= max_attempts:
        fail(session, row, f"gave up after {row.attempts} attempts: {error}")
        return row.state
    now = now or utcnow()
    delay = min(timedelta(seconds=retry_delay * 2 ** (row.attempts - 1)), MAX_RETRY_DELAY)
    row.state, row.lease_until = OutboxState.QUEUED, None
    row.next_attempt_at = now + delay * random.uniform(0.8, 1.2)
    row.last_error = error[:ERROR_CHARS]
    return row.state


def mark_failed(session: Session, claim: Claim, error: str) -> bool:
    """A permanent failure (5xx): the relay's answer is kept and shown on the ticket."""
    row = held(session, claim)
    if row is None:
        return False
    fail(session, row, error)
    return True


def fail(session: Session, row: Outbox, error: str) -> None:
    """Failed for good, with an Event on the ticket so agents see it and can retry."""
    row.state, row.lease_until, row.last_error = OutboxState.FAILED, None, error[:ERROR_CHARS]
    ticket = session.get(Ticket, row.ticket_id) if row.ticket_id else None
    if ticket is not None:
        record_event(session, ticket, EventKind.DELIVERY_FAILED, old=row.kind,
                     new=f"{', '.join(row.recipients)}: {error}"[:ERROR_CHARS],
                     message_row_id=row.message_row_id)


def get_outbox(session: Session, outbox_id: int) -> Outbox:
    row = session.get(Outbox, outbox_id)
    if row is None:
        raise NotFound(f"no outbox entry {outbox_id}")
    return row


def retry(session: Session, outbox_id: int, *, now: datetime | None = None) -> Outbox:
    """An admin's retry of a failed or suppressed mail: queued now, with a fresh set of tries."""
    row = get_outbox(session, outbox_id)
    if row.state not in (OutboxState.FAILED, OutboxState.SUPPRESSED):
        raise Conflict(f"outbox entry {outbox_id} is {row.state}; only failed mail is retried")
    row.state, row.attempts, row.next_attempt_at = OutboxState.QUEUED, 0, now or utcnow()
    return row


def purge(session: Session, *, older_than: datetime) -> int:
    """Sent rows past their use (bounces rarely come after days); failed rows stay."""
    return session.execute(
        delete(Outbox).where(Outbox.state == OutboxState.SENT, Outbox.sent_at < older_than)
        .execution_options(synchronize_session=False)).rowcount


def list_outbox(session: Session, *, state: str | None = None, limit: int = 100) -> list[Outbox]:
    query = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if state:
        query = query.where(Outbox.state == state)
    return list(session.scalars(query))


def next_due(session: Session) -> datetime | None:
    """When the earliest queued row becomes due: the sender sleeps until then."""
    return session.scalar(select(Outbox.next_attempt_at).where(
        Outbox.state == OutboxState.QUEUED).order_by(Outbox.next_attempt_at).limit(1))
