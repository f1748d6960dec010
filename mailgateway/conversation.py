"""Which ticket a message belongs to, and why: each rule is one function, tried in order.

(a) In-Reply-To, then References, naming a message we stored or sent;
(a') a message that stored mail already answers (it arrived after its reply);
(b) a signed reply token in an address the customer wrote to;
(c) the subject tag "[TAG #n]", only from a participant of ticket n (or a colleague
    at the requester's own company domain), so guessing numbers gets no one in;
(d) otherwise a new ticket in the queue whose address received it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgateway.config import Settings
from mailgateway.parse import ParsedMail
from mailgateway.reply_token import ticket_from_address
from models.schema import Message, Ticket
from models.tickets import get_ticket, is_participant

MAX_REFERENCES = 50
MAX_TICKET_ID = 2**31 - 1  # ticket.id is a 32-bit integer on PostgreSQL
FREEMAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "yahoo.fr", "yahoo.de", "ymail.com", "icloud.com", "me.com", "mac.com",
    "aol.com", "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de", "mail.ru", "yandex.ru",
    "yandex.com", "proton.me", "protonmail.com", "orange.fr", "free.fr", "laposte.net",
    "libero.it", "uol.com.br", "bol.com.br", "terra.com.br", "qq.com", "163.com",
})


@dataclass(frozen=True)
class Placement:
    """Where a message goes (a ticket, or None for a new one), by which rule and reference."""

    ticket_id: int | None
    rule: str  # in-reply-to | references | referenced-by | reply-token | subject-tag | new
    ref: str = ""
    ticket: Ticket | None = None  # loaded already; held so the next step need not reload it


@dataclass(frozen=True)
class Envelope:
    """What the thread rules read besides the parsed mail."""

    mail: ParsedMail
    recipients: Sequence[str]  # envelope RCPT TO, when the path knows it
    extra_references: Sequence[str] = ()  # e.g. the Message-ID a bounce reports


Rule = Callable[[Session, Envelope, Settings], Placement | None]


def by_in_reply_to(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """RFC 5322 In-Reply-To names the message answered: the strongest signal there is."""
    ids = [env.mail.in_reply_to] if env.mail.in_reply_to else []
    return _first_known(session, [*ids, *env.extra_references], "in-reply-to")


def by_references(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Newest reference first: phones trim References, but keep the last ones."""
    refs = list(reversed(env.mail.references))[:MAX_REFERENCES]
    return _first_known(session, refs, "references")


def by_referenced_by(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Out of order: a reply already stored names this message as its parent."""
    if not env.mail.message_id:
        return None
    ticket_id = session.scalar(
        select(Message.ticket_id).where(Message.in_reply_to == env.mail.message_id).limit(1))
    return Placement(ticket_id, "referenced-by", env.mail.message_id) if ticket_id else None


def by_reply_token(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Our Reply-To carries a signed token; only we can make one, so it cannot be guessed."""
    mail = env.mail
    addresses = [*env.recipients, *(a for _, a in mail.to), *(a for _, a in mail.cc),
                 mail.header("Delivered-To"), mail.header("X-Original-To")]
    for address in addresses:
        if address and "+t" in address.lower():
            ticket_id = ticket_from_address(address, settings.secret_key)
            if ticket_id and _existing(session, ticket_id):
                return Placement(ticket_id, "reply-token", address)
    return None


def by_subject_tag(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """[TAG #n] anywhere after the Re:/Fwd: prefixes, honoured only for the ticket's people."""
    found = subject_tag_pattern(settings.tickets.tag).search(env.mail.subject)
    if not found:
        return None
    ticket = _existing(session, int(found.group(1)))
    if ticket is None:
        return None
    sender = env.mail.from_address
    if is_participant(session, ticket, sender) or _colleague(ticket, sender):
        return Placement(ticket.id, "subject-tag", found.group(0))
    return None


RULES: list[Rule] = [by_in_reply_to, by_references, by_referenced_by, by_reply_token,
                     by_subject_tag]


def place(session: Session, env: Envelope, settings: Settings) -> Placement:
    """The first rule that finds a ticket wins; a merged ticket hands over to its target."""
    for rule in RULES:
        placement = rule(session, env, settings)
        if placement is not None:
            live = get_ticket(session, placement.ticket_id, follow_merge=True)
            return Placement(live.id, placement.rule, placement.ref, live)
    return Placement(None, "new", _unmatched_reference(session, env, settings))


@functools.cache
def subject_tag_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\[{re.escape(tag)}\s*#(\d{{1,12}})\]", re.IGNORECASE)


def _first_known(session: Session, ids: list[str], rule: str) -> Placement | None:
    if not ids:
        return None
    rows = dict(session.execute(
        select(Message.dedup_key, Message.ticket_id).where(Message.dedup_key.in_(ids))).all())
    for message_id in ids:
        if message_id in rows:
            return Placement(rows[message_id], rule, message_id)
    return None


def _existing(session: Session, ticket_id: int) -> Ticket | None:
    """A number past the id column's range names no ticket; PostgreSQL would refuse the
    query, and a stranger's "[ACME #99999999999]" must open a ticket, not fail."""
    return session.get(Ticket, ticket_id) if 0 < ticket_id <= MAX_TICKET_ID else None


def _colleague(ticket: Ticket, sender: str) -> bool:
    """A forward by someone at the requester's company (not a free-mail domain)."""
    domain = sender.rpartition("@")[2]
    return bool(domain) and domain not in FREEMAIL and (
        ticket.requester.email.rpartition("@")[2] == domain)


def _unmatched_reference(session: Session, env: Envelope, settings: Settings) -> str:
    """A new ticket records the tag it carried, so an agent sees why it was not threaded."""
    found = subject_tag_pattern(settings.tickets.tag).search(env.mail.subject)
    if not found:
        return ""
    if _existing(session, int(found.group(1))) is None:
        return f"{found.group(0)} (no such ticket)"
    return f"{found.group(0)} (sender is not a participant)"
