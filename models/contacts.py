"""Contacts: one per address, found case-insensitively, safe against a concurrent insert."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction

from models.db import dialect_insert, in_lists
from models.schema import Contact, utcnow


def normalize_address(address: str) -> str:
    return address.strip().lower()


def find_contact(session: Session, address: str) -> Contact | None:
    return session.scalar(select(Contact).where(Contact.email == normalize_address(address)))


def fetch_contacts(session: Session, people: Iterable[tuple[str, str]]) -> None:
    """A batch's contacts, (address, display name), in two statements: the absent ones
    inserted (insert-if-absent: a concurrent delivery's row is simply kept), then all loaded
    for contact_for to find, instead of one lookup and one INSERT per new address."""
    names: dict[str, str] = {}
    for address, name in people:
        email = normalize_address(address)
        if email and not names.get(email):
            names[email] = name[:200]
    known = session.info.setdefault("contacts", {})
    wanted = sorted(e for e in names if known.get(e) is None)  # sorted: no lock-order deadlock
    if not wanted:
        return
    now = utcnow()
    session.execute(dialect_insert(session)(Contact).on_conflict_do_nothing(
        index_elements=["email"]), [{"email": e, "name": names[e], "created_at": now}
                                    for e in wanted])
    for part in in_lists(wanted):
        for contact in session.scalars(select(Contact).where(Contact.email.in_(part))):
            known[contact.email] = contact


def contact_for(session: Session, address: str, name: str = "") -> Contact:
    """The contact for an address, created on first sight; a display name fills a blank one."""
    email = normalize_address(address)
    known = session.info.setdefault("contacts", {})  # per session: one lookup per address
    contact = known.get(email, _UNKNOWN)  # (a rolled-back savepoint's are forgotten below)
    if contact is _UNKNOWN:
        contact = find_contact(session, email)
    if contact is None:  # insert-if-absent: a concurrent insert of the same address is fine
        contact = session.scalar(
            dialect_insert(session)(Contact).values(email=email, name=name[:200],
                                                     created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["email"]).returning(Contact))
        if contact is None:
            contact = find_contact(session, email)
        elif (savepoint := session.get_nested_transaction()) is not None:
            session.info.setdefault("contacts_inserted", []).append((email, contact, savepoint))
        assert contact is not None
    if name and not contact.name:
        contact.name = name[:200]
    known[email] = contact
    return contact


_UNKNOWN = object()  # not looked up yet in this session (None: looked up, absent)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back_contacts(session: Session, rolled_back: SessionTransaction) -> None:
    """A savepoint that rolls back (one message of a batch set apart) takes the contacts it
    inserted with it: the session must not hand them to the next message, whose ticket
    would point at a row that is gone (PostgreSQL) or, as SQLite gives the id to the next
    new contact, at somebody else."""
    inserted = session.info.get("contacts_inserted")
    if not inserted:
        return
    undone = rolled_back  # a failed flush rolls back up to the nearest savepoint
    while not undone.nested and undone.parent is not None:
        undone = undone.parent
    known = session.info.get("contacts", {})
    for entry in list(inserted):
        email, contact, savepoint = entry
        if _within(savepoint, undone):
            inserted.remove(entry)
            known[email] = None  # absent again
            if contact in session:
                session.expunge(contact)


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
