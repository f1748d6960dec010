"""IMAP bookkeeping: per account and folder, where we are (UIDVALIDITY, last UID taken)
and how it goes (connected, last success, last error, taken today), for the poller,
`mailgateway imap status` and the web UI. Also the small facts the logins keep
(a rotated OAuth refresh token)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.schema import ImapState, KeyValue, utcnow


def folder_state(session: Session, account: str, folder: str) -> ImapState:
    """The row for account and folder, created empty on first use."""
    state = session.scalar(
        select(ImapState).where(ImapState.account == account, ImapState.folder == folder))
    if state is None:
        state = ImapState(account=account, folder=folder, uidvalidity=None, last_uid=0,
                          connected=False, last_error="", status={}, taken_day="",
                          taken_today=0)
        session.add(state)
        session.flush()
    return state


def account_states(session: Session) -> dict[str, ImapState]:
    """Every account's row for its folder, by account name (one folder per account)."""
    return {s.account: s for s in session.scalars(select(ImapState).order_by(ImapState.id))}


def resynchronise(session: Session, state: ImapState, uidvalidity: int) -> int:
    """The UID after which to fetch. A new UIDVALIDITY means every UID we know is void:
    start again from the first message; the ingest dedup makes the re-fetch harmless."""
    if state.uidvalidity != uidvalidity:
        if state.uidvalidity is not None:
            state.status = {**state.status, "previous_uidvalidity": state.uidvalidity,
                            "resynchronised_at": utcnow().isoformat(timespec="seconds"),
                            "unreadable": []}
        state.uidvalidity = uidvalidity
        state.last_uid = 0
    return state.last_uid


def record_taken(session: Session, state: ImapState, uid: int, *,
                 now: datetime | None = None) -> None:
    """A message is stored and acknowledged on the server: never fetch it again."""
    now = now or utcnow()
    day = now.date().isoformat()
    if state.taken_day != day:
        state.taken_day, state.taken_today = day, 0
    state.taken_today += 1
    state.last_uid = max(state.last_uid, uid)
    state.last_success_at = now


def record_unreadable(session: Session, state: ImapState, uid: int) -> None:
    """The server would not hand this message over: skipped, so it does not block the
    ones after it, and listed so that the reconciliation does not count it as taken."""
    unreadable = state.status.get("unreadable", [])
    state.status = {**state.status, "unreadable": sorted({*unreadable, uid})}


def record_connected(session: Session, state: ImapState, connected: bool, **facts: Any) -> None:
    """Connected or not, with what we learnt on the way (capabilities, holder, folder size)."""
    state.connected = connected
    if facts:
        state.status = {**state.status, **facts}


def record_success(session: Session, state: ImapState, **facts: Any) -> None:
    """A full round went well: the folder is in sync. The last error stays, with its time,
    so an admin sees what happened before last_success_at."""
    state.last_success_at = utcnow()
    state.status = {**state.status, **facts}


def record_error(session: Session, state: ImapState, error: str) -> None:
    state.connected = False
    state.last_error = error[:2000]
    state.last_error_at = utcnow()


def get_value(session: Session, key: str) -> str | None:
    row = session.get(KeyValue, key)
    return None if row is None else row.value


def set_value(session: Session, key: str, value: str) -> None:
    row = session.get(KeyValue, key)
    if row is None:
        session.add(KeyValue(key=key, value=value, updated_at=utcnow()))
    else:
        row.value, row.updated_at = value, utcnow()
