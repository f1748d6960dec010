"""Which ticket a message belongs to, and why: each rule is one function, tried in order.

(a) In-Reply-To, then References, naming a message we stored or sent;
(a') a message that stored mail already answers (it arrived after its reply), or stored
     mail of the same conversation (References starting at the same first message) that
     the sender, or a colleague of theirs, wrote or was addressed in: replies of strangers
     to one mass mailing we never stored are not one conversation;
(b) a signed reply token in an address the customer wrote to;
(c) the subject tag "[TAG #n]", only from a participant of ticket n (or a colleague
    at the requester's own company domain), so guessing numbers gets no one in;
(d) otherwise a new ticket in the queue whose address received it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from mailgateway.config import Settings
from mailgateway.parse import ParsedMail
from mailgateway.reply_token import ticket_from_address
from models.db import in_lists
from models.schema import Direction, Message, Ticket
from models.tickets import get_ticket, is_participant, naive_utc

MAX_REFERENCES = 50
MAX_TICKET_ID = 2**31 - 1  # ticket.id is a 32-bit integer on PostgreSQL
# Free-mail providers: two of their users are strangers, not colleagues. Brands whose name
# is theirs alone count under any country's domain (hotmail.co.uk, yahoo.com.br, gmx.at);
# the others (a common word, or a company that also gives out mail) by the exact domain.
FREEMAIL_BRANDS = frozenset({
    "gmail", "googlemail", "outlook", "hotmail", "live", "msn", "windowslive", "yahoo",
    "ymail", "rocketmail", "aol", "icloud", "gmx", "yandex", "rambler", "proton",
    "protonmail", "tutanota", "tuta", "hushmail", "mailfence", "posteo", "t-online",
    "freenet", "arcor", "libero", "virgilio", "tiscali", "wanadoo", "seznam", "centrum",
    "interia", "onet", "naver", "hanmail", "daum", "rediffmail", "btinternet", "btopenworld",
    "bigpond", "optusnet", "sina", "sohu", "aliyun",
})
FREEMAIL = frozenset({
    "me.com", "mac.com", "mail.com", "email.com", "email.cz", "mail.ru", "inbox.ru", "list.ru",
    "bk.ru", "ya.ru", "ukr.net", "web.de", "mail.de", "online.de", "orange.fr", "free.fr",
    "sfr.fr", "neuf.fr", "laposte.net", "club-internet.fr", "alice.it", "uol.com.br",
    "bol.com.br", "terra.com.br", "ig.com.br", "qq.com", "163.com", "126.com", "139.com",
    "yeah.net", "foxmail.com", "pm.me", "hey.com", "fastmail.com", "fastmail.fm", "zoho.com",
    "zohomail.com", "aim.com", "att.net", "comcast.net", "verizon.net", "sbcglobal.net",
    "bellsouth.net", "earthlink.net", "optonline.net", "cox.net", "charter.net", "shaw.ca",
    "sympatico.ca", "wp.pl", "o2.pl", "op.pl", "abv.bg", "inbox.lv", "bluewin.ch",
    "sunrise.ch", "telenet.be", "skynet.be", "ziggo.nl", "kpnmail.nl", "planet.nl",
    "xs4all.nl", "telia.com", "online.no", "xtra.co.nz", "virginmedia.com", "sky.com",
    "talktalk.net",
})


@dataclass(frozen=True)
class Placement:
    """Where a message goes (a ticket, or None for a new one), by which rule and reference."""

    ticket_id: int | None
    rule: str  # in-reply-to | references | referenced-by | thread-root | reply-token |
    # subject-tag | new
    ref: str = ""


@dataclass
class Known:
    """What the database holds about a batch's Message-IDs, fetched with one query per batch
    instead of one per message and rule. An id not fetched yet (the Message-ID a bounce
    reports) is looked up when a rule asks; messages stored by the batch itself are added
    as they are stored, so the answers stay those the database would give."""

    tickets: dict[str, int] = field(default_factory=dict)  # dedup key -> its ticket
    dates: dict[str, datetime | None] = field(default_factory=dict)  # dedup key -> its Date
    replies: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # in_reply_to ->
    # [(ticket, threaded_by)] of the messages answering it
    roots: dict[str, list[Member]] = field(default_factory=dict)  # thread_root -> the
    # messages of that conversation: their ticket and people
    opened: set[int] = field(default_factory=set)  # tickets the batch opened: maybe no rows
    # yet, and never merged (unless adopted as an early reply's: then removed from here)
    _asked: set[str] = field(default_factory=set)
    _asked_replies: set[str] = field(default_factory=set)
    _asked_roots: set[str] = field(default_factory=set)
    _held: list[Ticket] = field(default_factory=list)  # the identity map holds rows weakly

    def fetch(self, session: Session, mails: Iterable[ParsedMail]) -> None:
        """Every id the batch's rules will ask about, and the tickets they name."""
        mails = list(mails)
        keys = {k for m in mails for k in (m.dedup_key, m.in_reply_to,
                                             *m.references[-MAX_REFERENCES:]) if k}
        self.tickets_for(session, keys)
        self.replies_to(session, [m.message_id for m in mails if m.message_id])
        self.conversations(session, [m.thread_root for m in mails if m.thread_root])
        ids = (set(self.tickets.values()) | {t for rs in self.replies.values() for t, _ in rs}
               | {m.ticket_id for ms in self.roots.values() for m in ms})
        self._held = list(session.scalars(select(Ticket).where(Ticket.id.in_(ids)))) if ids else []

    def tickets_for(self, session: Session, keys: Iterable[str]) -> dict[str, int]:
        keys = list(dict.fromkeys(keys))
        missing = [k for k in keys if k not in self._asked]
        for part in in_lists(missing):
            for key, ticket_id, sent_at, direction in session.execute(
                    select(Message.dedup_key, Message.ticket_id, Message.sent_at,
                           Message.direction).where(Message.dedup_key.in_(part))):
                self.tickets[key] = ticket_id  # our own mail's sent_at is when it left:
                self.dates[key] = sent_at if direction == Direction.INBOUND else None  # no Date
            self._asked.update(part)
        return {k: self.tickets[k] for k in keys if k in self.tickets}

    def replies_to(self, session: Session, message_ids: Sequence[str]) -> None:
        _group_by(session, Message.in_reply_to, message_ids, self.replies, self._asked_replies)

    def conversations(self, session: Session, roots: Sequence[str]) -> None:
        """The stored messages of each conversation, oldest first, with their people."""
        missing = [r for r in dict.fromkeys(roots) if r not in self._asked_roots]
        for part in in_lists(missing):
            for root, ticket_id, sender, to, cc in session.execute(
                    select(Message.thread_root, Message.ticket_id, Message.from_address,
                           Message.to, Message.cc)
                    .where(Message.thread_root.in_(part)).order_by(Message.id)):
                self.roots.setdefault(root, []).append(
                    Member.of(ticket_id, sender, [*(to or []), *(cc or [])]))
            self._asked_roots.update(part)

    def stored_before(self, session: Session, mail: ParsedMail) -> int | None:
        """The ticket that holds this mail already, if any. One Message-ID with two Dates is
        two messages (a web form or a script that stamps every mail alike; a re-delivery
        never changes the Date): the later one is keyed by its content too, and asked again."""
        if mail.dedup_key not in self.tickets:
            return None
        stored, sent_at = self.dates.get(mail.dedup_key), naive_utc(mail.sent_at)
        if not mail.reused_id and mail.message_id and stored and sent_at and stored != sent_at:
            mail.reuse_id()
            return self.tickets_for(session, [mail.dedup_key]).get(mail.dedup_key)
        return self.tickets[mail.dedup_key]

    def same_conversation(self, session: Session, root: str) -> list[Member]:
        """Each stored message whose thread_root is root: its ticket and people."""
        self.conversations(session, [root])
        return self.roots.get(root, [])

    def answers(self, session: Session, message_id: str) -> list[tuple[int, str]]:
        """(ticket, threaded_by) of each stored message whose In-Reply-To is message_id."""
        self.replies_to(session, [message_id])
        return self.replies.get(message_id, [])

    def add(self, mail: ParsedMail, ticket_id: int, rule: str, *, opened: bool) -> None:
        """A message the batch stored (its rows may wait for the batch's write)."""
        if opened:
            self.opened.add(ticket_id)
        self.tickets[mail.dedup_key] = ticket_id
        self.dates[mail.dedup_key] = naive_utc(mail.sent_at)
        self._asked.add(mail.dedup_key)
        if mail.in_reply_to:
            self.replies.setdefault(mail.in_reply_to, []).append((ticket_id, rule))
        if mail.thread_root:
            self.roots.setdefault(mail.thread_root, []).append(Member.of(
                ticket_id, mail.from_address, [a for _, a in (*mail.to, *mail.cc)]))


@dataclass(frozen=True)
class Member:
    """A stored message of a conversation: its ticket, and who wrote it or was addressed."""

    ticket_id: int
    people: frozenset[str]

    @classmethod
    def of(cls, ticket_id: int, sender: str, addressed: Iterable[str]) -> Member:
        return cls(ticket_id, frozenset(a.lower() for a in (sender, *addressed) if a))


def _group_by(session: Session, column: InstrumentedAttribute, values: Sequence[str],
              found: dict[str, list[tuple[int, str]]], asked: set[str]) -> None:
    """(ticket, threaded_by) of the stored messages whose column holds each value, oldest
    first, for the values not asked about yet."""
    missing = [v for v in dict.fromkeys(values) if v not in asked]
    for part in in_lists(missing):
        for value, ticket_id, rule in session.execute(
                select(column, Message.ticket_id, Message.threaded_by)
                .where(column.in_(part)).order_by(Message.id)):
            found.setdefault(value, []).append((ticket_id, rule))
        asked.update(part)


@dataclass(frozen=True)
class Envelope:
    """What the thread rules read besides the parsed mail."""

    mail: ParsedMail
    recipients: Sequence[str]  # envelope RCPT TO, when the path knows it
    extra_references: Sequence[str] = ()  # e.g. the Message-ID a bounce reports
    known: Known = field(default_factory=Known)  # the batch's; a fresh one asks as it goes


Rule = Callable[[Session, Envelope, Settings], Placement | None]


def by_in_reply_to(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """RFC 5322 In-Reply-To names the message answered: the strongest signal there is."""
    ids = [env.mail.in_reply_to] if env.mail.in_reply_to else []
    return _first_known(session, env, [*ids, *env.extra_references], "in-reply-to")


def by_references(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Newest reference first: phones trim References, but keep the last ones."""
    refs = list(reversed(env.mail.references))[:MAX_REFERENCES]
    return _first_known(session, env, refs, "references")


def by_referenced_by(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Out of order: a reply already stored names this message as its parent."""
    message_id = env.mail.answered_as
    if not message_id:
        return None
    answers = env.known.answers(session, message_id)
    return Placement(answers[0][0], "referenced-by", message_id) if answers else None


def by_thread_root(session: Session, env: Envelope, settings: Settings) -> Placement | None:
    """Out of order, with no stored parent (an import whose answers in between we never
    saw): stored mail whose References start at the same first message is this one's
    conversation, if the sender (or a colleague) was one of its people. A first message
    we never stored may be a mass mailing: its strangers' replies are not one ticket."""
    root, sender = env.mail.thread_root, env.mail.from_address
    if not root or not sender:
        return None
    for member in env.known.same_conversation(session, root):
        if sender in member.people or any(colleagues(sender, p) for p in member.people):
            return Placement(member.ticket_id, "thread-root", root)
    return None


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
    sender = env.mail.from_address  # "" (no From, no Return-Path) proves no one's identity
    if sender and (is_participant(session, ticket, sender)
                   or colleagues(sender, ticket.requester.email)):
        return Placement(ticket.id, "subject-tag", found.group(0))
    return None


RULES: list[Rule] = [by_in_reply_to, by_references, by_referenced_by, by_thread_root,
                     by_reply_token, by_subject_tag]


def place(session: Session, env: Envelope, settings: Settings) -> Placement:
    """The first rule that finds a ticket wins; a merged ticket hands over to its target."""
    for rule in RULES:
        placement = rule(session, env, settings)
        if placement is None:
            continue
        if placement.ticket_id in env.known.opened:
            return placement  # this batch opened it: not merged, and maybe not a row yet
        live = get_ticket(session, placement.ticket_id, follow_merge=True)
        return Placement(live.id, placement.rule, placement.ref)
    return Placement(None, "new", _unmatched_reference(session, env, settings))


@functools.cache
def subject_tag_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\[{re.escape(tag)}\s*#(\d{{1,12}})\]", re.IGNORECASE)


def _first_known(session: Session, env: Envelope, ids: list[str], rule: str
                 ) -> Placement | None:
    if not ids:
        return None
    rows = env.known.tickets_for(session, ids)
    for message_id in ids:
        if message_id in rows:
            return Placement(rows[message_id], rule, message_id)
    return None


def _existing(session: Session, ticket_id: int) -> Ticket | None:
    """A number past the id column's range names no ticket; PostgreSQL would refuse the
    query, and a stranger's "[ACME #99999999999]" must open a ticket, not fail."""
    return session.get(Ticket, ticket_id) if 0 < ticket_id <= MAX_TICKET_ID else None


def colleagues(one: str, other: str) -> bool:
    """Two addresses at the same company's domain (a free-mail domain is no company)."""
    domain = one.rpartition("@")[2].lower()
    return bool(domain) and not is_freemail(domain) and other.rpartition("@")[2].lower() == domain


SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ne", "or", "ac", "gen"})


def is_freemail(domain: str) -> bool:
    """A known free-mail provider's domain, in any country (hotmail.co.uk, yahoo.com.br)."""
    domain = domain.lower()
    labels = domain.split(".")
    if domain in FREEMAIL or len(labels) < 2:
        return domain in FREEMAIL
    under_country = len(labels) >= 3 and labels[-2] in SECOND_LEVEL and len(labels[-1]) == 2
    return labels[-3 if under_country else -2] in FREEMAIL_BRANDS


def _unmatched_reference(session: Session, env: Envelope, settings: Settings) -> str:
    """A new ticket records the tag it carried, so an agent sees why it was not threaded."""
    found = subject_tag_pattern(settings.tickets.tag).search(env.mail.subject)
    if not found:
        return ""
    if _existing(session, int(found.group(1))) is None:
        return f"{found.group(0)} (no such ticket)"
    return f"{found.group(0)} (sender is not a participant)"
