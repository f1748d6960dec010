"""Receipts for raw mail: one RawMail row per distinct bytes, whatever became of them.

The bytes are durable in the blob store before the row is written; the row is committed
with what became of the mail (stored, ignored or quarantined with a reason), so a
receipt never waits half-done. The same bytes again find the same row (unique sha256,
insert-or-nothing), never a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from models.db import dialect_insert
from models.errors import Conflict, NotFound
from models.schema import RawMail, RawState, utcnow


@dataclass(frozen=True)
class RawReceipt:
    sha256: str
    size: int
    source: str
    recipients: tuple[str, ...] = ()  # envelope RCPT TO: a retry is routed as the mail was


def record_raw(session: Session, receipts: Sequence[RawReceipt]) -> dict[str, RawMail]:
    """The RawMail row for each receipt, inserted unless the same bytes came before."""
    if not receipts:
        return {}
    insert = dialect_insert(session)
    now = utcnow()
    rows = {r.sha256: {"sha256": r.sha256, "size": r.size, "source": r.source[:200],
                       "received_at": now, "state": RawState.RECEIVED, "reason": "",
                       "header_subject": "", "header_from": "", "attempts": 0,
                       "recipients": list(r.recipients) or None}
            for r in receipts}
    session.execute(insert(RawMail).on_conflict_do_nothing(index_elements=["sha256"]),
                    list(rows.values()))  # executemany: one compiled statement, cached
    found = session.scalars(select(RawMail).where(RawMail.sha256.in_(list(rows))))
    return {raw.sha256: raw for raw in found}


def settled_raw(session: Session, digests: Sequence[str]) -> dict[str, RawMail]:
    """Receipts of these bytes that an earlier delivery already settled."""
    found = session.scalars(select(RawMail).where(RawMail.sha256.in_(list(set(digests))),
                                                  RawMail.state != RawState.RECEIVED))
    return {raw.sha256: raw for raw in found}


def settle(raw: RawMail, state: RawState, reason: str = "", *, ticket_id: int | None = None,
           message_id: str | None = None, subject: str = "", sender: str = "") -> None:
    """What became of the mail, with enough header facts to list it without re-parsing."""
    raw.state = state
    raw.reason = reason[:4000]
    raw.ticket_id = ticket_id
    raw.attempts = (raw.attempts or 0) + 1
    if message_id:
        raw.header_message_id = message_id[:998]
    if subject:
        raw.header_subject = subject[:1000]
    if sender:
        raw.header_from = sender[:320]


def save_settled(session: Session, raws: Sequence[RawMail]) -> None:
    """Write what became of a batch of receipts in one executemany, not one UPDATE per
    message riding along each message's flush."""
    if raws:
        session.execute(update(RawMail), [
            {"id": r.id, "state": r.state, "reason": r.reason, "ticket_id": r.ticket_id,
             "attempts": r.attempts, "header_message_id": r.header_message_id,
             "header_subject": r.header_subject, "header_from": r.header_from}
            for r in raws])


def quarantined(session: Session, *, limit: int = 500) -> list[RawMail]:
    return list(session.scalars(
        select(RawMail).where(RawMail.state == RawState.QUARANTINED)
        .order_by(RawMail.received_at.desc()).limit(limit)))


def get_raw(session: Session, raw_id: int) -> RawMail:
    raw = session.get(RawMail, raw_id)
    if raw is None:
        raise NotFound(f"no received message #{raw_id}")
    return raw


def delete_quarantined(session: Session, raw_id: int) -> RawMail:
    """Drop a quarantined receipt (its bytes stay in the store, shared by sha256)."""
    raw = get_raw(session, raw_id)
    if raw.state != RawState.QUARANTINED:
        raise Conflict(f"message #{raw_id} is {raw.state}, not quarantined")
    session.execute(delete(RawMail).where(RawMail.id == raw_id))
    return raw
