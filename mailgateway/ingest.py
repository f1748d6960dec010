"""The one path every received message takes, whatever brought it (SMTP, IMAP, pipe, import).

    1 store raw    bytes in the blob store, made durable with one sync per batch
    2 parse        parse.py: never raises for mail, NotAMessage for garbage
    3 classify     classify.py: human or robot; ours or a loop is ignored
    4 thread       conversation.py: which ticket, by which rule
    5 domain op    models/customer_mail.py: open a ticket or add the message, as rows
    6 follow-ups   FOLLOW_UPS: acknowledgement, notifications (outbox rows)
    The receipt rows (RawMail) and 4-6 commit in one transaction for a whole batch. A
    duplicate (unique dedup_key) or a fault makes the batch run again with a savepoint per
    message, so that message alone is settled as duplicate or quarantined. A transaction
    that fails as a whole leaves nothing but the bytes, and nothing was acknowledged.

The caller acknowledges (SMTP 250, IMAP \\Seen, exit 0) only after this returns.
"""

from __future__ import annotations

import email.errors
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailgateway.classify import Verdict, classify, delivery_report
from mailgateway.config import Settings
from mailgateway.conversation import Envelope, Known, Placement, place
from mailgateway.errors import TemporaryFailure
from mailgateway.outbound_steps import BouncedMail, bounced_outbox, queue_followups
from mailgateway.parse import NOT_A_MESSAGE, NotAMessage, ParsedMail, parse
from mailgateway.reply_token import base_address
from mailgateway.runtime import Runtime
from models.bounces import record_bounce
from models.changes import merge
from models.contacts import fetch_contacts
from models.customer_mail import CustomerMail, Written
from models.errors import NotFound
from models.inbound import RawReceipt, get_raw, record_raw, save_settled, settle, settled_raw
from models.outbox import queued_mail
from models.queues import queue_named
from models.schema import Direction, Message, Queue, RawMail, RawState, Ticket
from models.tickets import AttachmentDraft, MessageDraft, get_ticket

log = logging.getLogger(__name__)

Action = Literal["created", "appended", "duplicate", "ignored", "quarantined"]
# The database itself is in trouble (down, locked, deadlocked): every message waits and
# retries. Any other database error inside one message's savepoint is that message's.
DATABASE_TROUBLE = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Source:
    kind: str  # smtp | lmtp | imap | pipe | import
    detail: str = ""  # account name, peer address, file name
    recipients: tuple[str, ...] = ()  # envelope RCPT TO

    def __str__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind


@dataclass(frozen=True)
class IngestResult:
    action: Action
    ticket: int | None
    message_id: str | None
    reason: str
    raw_id: int | None = None
    not_a_message: bool = False  # the pipe exits 65 for these: the sender should hear of it
    mail_queued: bool = False  # its batch queued outbound mail: a sender elsewhere has work

    def as_json(self) -> dict[str, object]:
        return {"action": self.action, "ticket": self.ticket, "message_id": self.message_id,
                "reason": self.reason, "raw_id": self.raw_id}


@dataclass
class Work:
    """One message on its way through the steps."""

    receipt: RawReceipt
    data: bytes
    source: Source
    raw: RawMail | None = None  # its receipt row, once the batch's transaction holds one
    mail: ParsedMail | None = None
    verdict: Verdict | None = None
    attachments: list[AttachmentDraft] = field(default_factory=list)
    failure: str = ""  # why it could not be parsed: quarantined in the batch's transaction
    not_a_message: bool = False
    retry: bool = False  # `quarantine retry`: processed again although its receipt is settled
    result: IngestResult | None = None
    same_as: Work | None = None  # the same bytes earlier in this batch


@dataclass(frozen=True)
class Stored:
    """What a follow-up step sees: a message just stored and how it got there (run once the
    batch is written, so ids are known; a step loads the rows it needs, all at once)."""

    ticket_id: int
    message_id: int
    created: bool
    mail: ParsedMail
    verdict: Verdict
    source: Source


FollowUp = Callable[[Session, Sequence[Stored], Settings], None]  # the batch's, at once
FOLLOW_UPS: list[FollowUp] = [queue_followups]


def receive(runtime: Runtime, data: bytes, source: Source) -> IngestResult:
    """Take one message; committed durably when this returns. TemporaryFailure: try later."""
    return receive_batch(runtime, [(data, source)])[0]


def receive_batch(runtime: Runtime, items: Sequence[tuple[bytes, Source]], *,
                  turn: Callable[[], AbstractContextManager] = nullcontext,
                  ) -> list[IngestResult]:
    """Take many messages with one durable commit in all. `turn` lets parallel importers
    store and parse at once but commit in order, so every batch's threading sees the
    batches before it. A batch that fails before its commit still takes its turn, passing
    it on at once: the batches after it must not wait for it for ever."""
    try:
        with _temporary_on_database_errors():
            work, written = store_raw(runtime, items)
        with _temporary_on_storage_errors():
            for item in work:
                if item.result is None and item.same_as is None:
                    prepare(runtime, item)
            _make_durable(runtime, work, written)
    except Exception:
        with turn():
            raise
    with turn(), _temporary_on_database_errors():
        mailed = commit_messages(runtime, work)
    results = [_repeat_answer(item) if item.same_as else item.result for item in work]
    return [replace(r, mail_queued=True) for r in results] if mailed else results


def _repeat_answer(item: Work) -> IngestResult:
    """The same bytes twice in one batch: the copy is answered with what became of the first,
    known only after the commit (before it, the shared receipt names no ticket)."""
    first = item.same_as.result
    if first.action not in ("created", "appended"):
        return first
    return IngestResult("duplicate", first.ticket, first.message_id,
                        "the same bytes came twice in one batch", first.raw_id)


def _make_durable(runtime: Runtime, work: Sequence[Work], written: Future[None] | None
                  ) -> None:
    """The raw bytes (written meanwhile by the store's thread) and the attachments reach the
    disk with one sync, before the commit that points at them."""
    paths = [runtime.store.path(a.sha256) for item in work for a in item.attachments]
    if written is not None:  # (a retry's raw bytes are on disk already)
        written.result()
        paths += [runtime.store.path(item.receipt.sha256) for item in work]
    if paths:
        runtime.store.sync(paths)


@contextmanager
def _temporary_on_storage_errors() -> Iterator[None]:
    """Disk full, permissions, a file where the store's folder should be: try again later."""
    try:
        yield
    except OSError as error:
        raise TemporaryFailure(f"cannot store the message: {error}") from error


def retry_quarantined(runtime: Runtime, raw_id: int) -> IngestResult:
    """Run a quarantined message through the normal path again, after a fix."""
    with runtime.reads() as session:
        raw = get_raw(session, raw_id)
    source = Source(raw.source, recipients=tuple(raw.recipients or ()))
    item = Work(RawReceipt(raw.sha256, raw.size, raw.source), runtime.store.get(raw.sha256),
                source, retry=True)
    with _temporary_on_storage_errors():
        prepare(runtime, item)
        _make_durable(runtime, [item], None)
    with _temporary_on_database_errors():
        commit_messages(runtime, [item])
    return item.result


# -- 1 store raw ---------------------------------------------------------------------------

def store_raw(runtime: Runtime, items: Sequence[tuple[bytes, Source]]
              ) -> tuple[list[Work], Future[None]]:
    """The bytes go to the store first (written while the batch is parsed, durable before
    its commit); bytes received before are answered from their receipt without parsing
    them again (same bytes again = no-op)."""
    digests, written = runtime.store.write_behind([data for data, _ in items])
    with runtime.reads() as session:  # no write lock: parsing comes before the commit
        earlier = settled_raw(session, digests)
    work, first = [], {}
    for (data, source), digest in zip(items, digests, strict=True):
        item = Work(RawReceipt(digest, len(data), str(source), source.recipients), data, source,
                    same_as=first.get(digest))
        if item.same_as is None and digest in earlier:
            item.raw = earlier[digest]
            item.result = _earlier_answer(item.raw)
        first.setdefault(digest, item)
        work.append(item)
    return work, written


def _earlier_answer(raw: RawMail) -> IngestResult:
    if raw.state == RawState.QUARANTINED:  # the same garbage again is refused again (65)
        return IngestResult("quarantined", None, raw.header_message_id,
                            f"already quarantined: {raw.reason}", raw.id,
                            not_a_message=raw.reason.startswith(NOT_A_MESSAGE))
    if raw.state == RawState.IGNORED:
        return IngestResult("ignored", None, raw.header_message_id, raw.reason, raw.id)
    return IngestResult("duplicate", raw.ticket_id, raw.header_message_id,
                        "the same bytes were received before", raw.id)


# -- 2 parse, 3 classify (no database) ----------------------------------------------------

def prepare(runtime: Runtime, item: Work) -> None:
    """Parse, classify and store attachment bytes; a fault quarantines this message only."""
    try:
        item.mail = parse(item.data, runtime.settings.limits)
        item.verdict = classify(item.mail.message)
        item.attachments = [
            AttachmentDraft(filename=a.filename, content_type=a.content_type, size=len(a.data),
                            sha256=runtime.store.put(a.data, sync=False), content_id=a.content_id,
                            inline=a.inline)
            for a in item.mail.attachments]
    except NotAMessage as error:
        item.failure, item.not_a_message = str(error), True
    except (email.errors.MessageError, RecursionError, ValueError, LookupError, TypeError,
            UnicodeError, AttributeError, IndexError, KeyError) as error:
        log.exception("cannot parse the message from %s (sha256 %s)", item.source,
                      item.receipt.sha256)
        item.failure = f"parse failed: {error!r}"


def is_ours(address: str, settings: Settings) -> bool:
    """An address of ours (a queue, a reply token, anything at a domain we accept): never a
    participant, or our own replies would be copied to ourselves."""
    domains = {d.lower() for d in settings.smtp.domains}
    return (address.lower() in settings.our_addresses
            or base_address(address) in settings.our_addresses
            or address.lower().rpartition("@")[2] in domains)


def _copied(mail: ParsedMail, settings: Settings) -> list[tuple[str, str]]:
    """(address, name) of the people a mail copies, who join its ticket: never our own."""
    return [(a, n) for n, a in mail.cc if not is_ours(a, settings)]


def ignore_reason(mail: ParsedMail, verdict: Verdict, settings: Settings) -> str:
    """Our own mail coming back is a loop waiting to happen: keep it, act on nothing.
    A bounce from our own domain's mailer-daemon is not ours: it reports a failure."""
    if verdict.auto != "bounce" and mail.from_address in settings.our_addresses:
        return f"from our own address {mail.from_address}"
    return ""


# -- 4 thread, 5 domain op, 6 follow-ups (one transaction) ---------------------------------

RETRYABLE = {"40P01", "40001"}  # PostgreSQL: deadlock victim, serialization failure
ATTEMPTS = 4


def commit_messages(runtime: Runtime, work: Sequence[Work]) -> bool:
    """One transaction for the batch; True if it queued outbound mail. PostgreSQL may abort
    it as a deadlock's victim when two processes touch the same contacts or tickets in
    another order: then it simply runs again (nothing of it was committed), a few times,
    before giving up with 451 / exit 75."""
    answered = [(item.result, item.raw) for item in work]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _commit_once(runtime, work, answered)
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) not in RETRYABLE or attempt == ATTEMPTS:
                raise
            log.info("batch of %d aborted by the database (%s); running it again",
                     len(work), error.orig.sqlstate)
            _restore(work, answered)
            time.sleep(random.uniform(0.005, 0.05) * attempt)


def _commit_once(runtime: Runtime, work: Sequence[Work], answered: list) -> bool:
    """Fast path: duplicates known from one query, no savepoints. If the commit still meets
    the unique dedup_key (a concurrent delivery of the same mail won the race) or any message
    fails, the batch is redone with a savepoint per message, so only the duplicate or the
    faulty message is set apart."""
    try:
        with runtime.sessions.begin() as session:
            _store_all(session, runtime.settings, work, careful=False)
            return queued_mail(session)
    except DATABASE_TROUBLE:
        raise  # TemporaryFailure for all
    except Exception:  # noqa: BLE001 -- a duplicate or one bad message: find it carefully
        log.warning("batch of %d failed on the fast path; redoing one by one", len(work))
        _restore(work, answered)
        with runtime.sessions.begin() as session:
            _store_all(session, runtime.settings, work, careful=True)
            return queued_mail(session)


def _restore(work: Sequence[Work], answered: list) -> None:
    for item, (result, raw) in zip(work, answered, strict=True):
        item.result, item.raw = result, raw


@dataclass
class _Placed:
    """A message stored in this batch, awaiting the batch's write for its ids."""

    item: Work
    placement: Placement
    written: Written
    followed_up: bool = False  # its follow-ups already ran (in its savepoint)

    def stored(self) -> Stored:
        return Stored(self.written.ticket_id, self.written.message_id,
                      self.written.created, self.item.mail, self.item.verdict, self.item.source)


def _store_all(session: Session, settings: Settings, work: Sequence[Work], *, careful: bool
               ) -> None:
    """Receipts, threading, messages, follow-ups: the batch's whole transaction. What the
    batch asks of the database (receipts, references, tickets, contacts) is fetched once."""
    pending = _receipts(session, work)
    mails = [i.mail for i in pending if i.mail is not None]
    known = Known()
    known.fetch(session, mails)
    fetch_contacts(session, _people(session, pending, settings, known))
    placed, rows = [], CustomerMail(session, expected=len(pending))
    with session.no_autoflush:
        for item in pending:
            if item.failure:
                item.result = _quarantine(item.raw, item.mail, item.failure,
                                          not_a_message=item.not_a_message)
                continue
            stored = known.stored_before(session, item.mail)
            if stored is not None:
                item.result = _duplicate(item.raw, item.mail, stored)
                continue
            outcome = _store_one(session, settings, item, known, rows, careful=careful)
            if isinstance(outcome, _Placed):
                placed.append(outcome)
                _known(known, outcome)
            else:
                item.result = outcome
    rows.write()
    for done in placed:
        done.item.result = _stored(done)
    _follow_up(session, [done.stored() for done in placed if not done.followed_up],
               settings)
    save_settled(session, [item.raw for item in pending])


def _people(session: Session, work: Sequence[Work], settings: Settings, known: Known
            ) -> Iterator[tuple[str, str]]:
    """Whom the batch will make contacts of: each sender and the people a person's mail
    copies (never our own addresses); none for mail that will be set apart, ignored, found a
    duplicate, or stored as a bounce of ours."""
    for item in work:
        mail, verdict = item.mail, item.verdict
        if (item.failure or known.stored_before(session, mail) is not None
                or verdict.auto == "bounce"
                or ignore_reason(mail, verdict, settings)):
            continue
        yield mail.from_address, mail.from_name
        if not verdict.auto:
            yield from _copied(mail, settings)


def _receipts(session: Session, work: Sequence[Work]) -> list[Work]:
    """A receipt row for each message still to be done; one settled meanwhile by another
    delivery of the same bytes is answered from it. The rows are detached: settled in
    memory, written for the whole batch with one executemany (save_settled)."""
    todo = [i for i in work if i.result is None and i.same_as is None]
    rows = record_raw(session, [i.receipt for i in todo])
    for raw in rows.values():
        session.expunge(raw)
    for item in todo:
        item.raw = rows[item.receipt.sha256]
        if item.raw.state != RawState.RECEIVED and not item.retry:
            item.result = _earlier_answer(item.raw)
    return [i for i in todo if i.result is None]


def _known(known: Known, done: _Placed) -> None:
    """Threading sees a message stored by the batch at once, although its rows wait for the
    batch's write: a reply later in the batch finds it, and its ticket."""
    known.add(done.item.mail, done.written.ticket_id, done.placement.rule,
              opened=done.written.created)


def _store_one(session: Session, settings: Settings, item: Work, known: Known,
               rows: CustomerMail, *, careful: bool) -> IngestResult | _Placed:
    raw, mail, verdict = item.raw, item.mail, item.verdict
    reason = ignore_reason(mail, verdict, settings)
    if reason:
        settle(raw, RawState.IGNORED, reason, message_id=mail.message_id, subject=mail.subject,
               sender=mail.from_address)
        return IngestResult("ignored", None, mail.message_id, reason, raw.id)
    if not careful:  # follow-ups wait for the batch's write
        return _thread_and_store(session, settings, item, known, rows)
    try:
        with session.begin_nested():
            placed = _thread_and_store(session, settings, item, known, rows)
            rows.write()
            _follow_up(session, [placed.stored()], settings)
            placed.followed_up = True
            return placed
    except IntegrityError as error:
        ticket_id = session.scalar(
            select(Message.ticket_id).where(Message.dedup_key == mail.dedup_key))
        if ticket_id is not None:
            return _duplicate(raw, mail, ticket_id)
        return _quarantine(raw, mail, f"store failed: {error!r}")  # not a duplicate
    except DATABASE_TROUBLE:
        raise  # not this message's fault
    except Exception as error:  # noqa: BLE001 -- edge: quarantine with the reason
        log.exception("cannot store message %s (raw %s)", mail.message_id, raw.id)
        return _quarantine(raw, mail, f"store failed: {error!r}")


def _follow_up(session: Session, stored: Sequence[Stored], settings: Settings) -> None:
    if stored:
        for follow_up in FOLLOW_UPS:
            follow_up(session, stored, settings)


def _stored(done: _Placed) -> IngestResult:
    """The answer for a stored message, once the write has given its ticket an id."""
    item, placement, written = done.item, done.placement, done.written
    mail, verdict = item.mail, item.verdict
    settle(item.raw, RawState.STORED, placement.rule, ticket_id=written.ticket_id,
           message_id=mail.message_id, subject=mail.subject, sender=mail.from_address)
    log.info("message %s %s ticket %s (%s)", mail.message_id,
             "opened" if written.created else "appended to", written.ticket_id, placement.rule)
    why = f"{placement.rule}: {placement.ref}" if placement.ref else placement.rule
    if verdict.auto:
        why += f"; automatic ({verdict.reason})"
    return IngestResult("created" if written.created else "appended", written.ticket_id,
                        mail.message_id, why, item.raw.id)


def _thread_and_store(session: Session, settings: Settings, item: Work, known: Known,
                      rows: CustomerMail) -> _Placed:
    raw, mail, verdict = item.raw, item.mail, item.verdict
    extra = []
    if verdict.auto == "bounce":
        report = delivery_report(mail.message)
        ours = bounced_outbox(session, settings, mail, item.source.recipients, report)
        if ours is not None:
            return _store_bounce(session, settings, item, ours)
        if report and report.original_message_id:
            extra.append(report.original_message_id)
    placement = place(session, Envelope(mail, item.source.recipients, tuple(extra), known),
                      settings)
    draft = _draft(mail, verdict, placement, raw.id, item.attachments)
    cc = _copied(mail, settings)
    if placement.ticket_id is None:
        queue = _queue(session, route(mail, item.source, settings))
        written = rows.open_ticket(draft, queue=queue,
                                   priority=settings.tickets.default_priority, cc=cc)
    else:
        written = rows.add(placement.ticket_id, draft, cc=[] if verdict.auto else cc)
    adopt_early_replies(session, written, mail, known, rows)
    return _Placed(item, placement, written)


# How a reply stored before its parent was placed: it found nothing (a ticket of its own),
# or only mail of its own conversation that came even earlier (referenced-by, thread-root).
PARENTLESS = ("new", "referenced-by", "thread-root")


def adopt_early_replies(session: Session, written: Written, mail: ParsedMail, known: Known,
                        rows: CustomerMail) -> None:
    """Out of order: a reply stored before this message, its parent, found nothing and opened
    a ticket of its own. Now that the parent is here and threaded, that ticket is merged into
    the parent's, so the whole conversation is one ticket as a person would expect. (Only
    the parent's arrival merges: any later mail of the conversation doing it would undo an
    agent's split.)"""
    if not mail.answered_as or not any(
            rule in PARENTLESS and ticket_id != written.ticket_id
            for ticket_id, rule in known.answers(session, mail.answered_as)):
        return
    rows.write()  # the merge moves rows: the batch's, this message's and its ticket's too
    ticket = get_ticket(session, written.ticket_id)
    early = session.scalars(
        select(Ticket).join(Message, Message.ticket_id == Ticket.id)
        .where(Message.in_reply_to == mail.message_id, Message.threaded_by.in_(PARENTLESS),
               Ticket.id != ticket.id, Ticket.merged_into_id.is_(None))).unique().all()
    for orphan in early:
        log.info("ticket %s was opened by an early reply to %s: merged into ticket %s",
                 orphan.id, mail.message_id, ticket.id)
        merge(session, orphan, ticket, actor=None)
        known.opened.discard(orphan.id)  # mail threaded to it now follows the merge


def _queue(session: Session, name: str) -> Queue:
    """A queue added to config.toml reaches the database with `mailgateway init` (or `run`)."""
    queue = queue_named(session, name)
    if queue is None:
        raise NotFound(f"queue {name!r} is not in the database yet: run `mailgateway init`")
    return queue


def _quarantine(raw: RawMail, mail: ParsedMail | None, reason: str, *,
                not_a_message: bool = False) -> IngestResult:
    message_id = mail.message_id if mail else None
    settle(raw, RawState.QUARANTINED, reason, message_id=message_id,
           subject=mail.subject if mail else "", sender=mail.from_address if mail else "")
    return IngestResult("quarantined", None, message_id, reason, raw.id,
                        not_a_message=not_a_message)


def _store_bounce(session: Session, settings: Settings, item: Work, ours: BouncedMail
                  ) -> _Placed:
    """A report about one of our mails goes on that mail's ticket as its delivery failure
    (a hard bounce also fails the outbox row and pauses automatic mail to the address)."""
    placement = Placement(ours.row.ticket_id, "bounce", ours.ref)
    draft = _draft(item.mail, item.verdict, placement, item.raw.id, item.attachments)
    message = record_bounce(session, ours.row, draft, ours.report,
                            suppress_days=settings.acknowledgement.bounce_suppress_days)
    written = Written(message.ticket_id, message.id, created=False)
    return _Placed(item, placement, written, followed_up=True)  # a robot: no follow-ups


def _duplicate(raw: RawMail, mail: ParsedMail, ticket_id: int | None) -> IngestResult:
    settle(raw, RawState.STORED, "duplicate", ticket_id=ticket_id, message_id=mail.message_id,
           subject=mail.subject, sender=mail.from_address)
    return IngestResult("duplicate", ticket_id, mail.message_id,
                        f"already stored on ticket {ticket_id}", raw.id)


def route(mail: ParsedMail, source: Source, settings: Settings) -> str:
    """The queue whose address received the mail: envelope first, then To and Cc."""
    by_address = {q.address.lower(): q.name for q in settings.queues}
    for address in [*source.recipients, *(a for _, a in mail.to), *(a for _, a in mail.cc)]:
        for candidate in (address.lower(), base_address(address)):
            if candidate in by_address:
                return by_address[candidate]
    return settings.default_queue.name


def _draft(mail: ParsedMail, verdict: Verdict, placement: Placement, raw_id: int,
           attachments: list[AttachmentDraft]) -> MessageDraft:
    return MessageDraft(
        direction=Direction.INBOUND, dedup_key=mail.dedup_key, message_id=mail.message_id,
        from_address=mail.from_address, from_name=mail.from_name,
        to=[a for _, a in mail.to], cc=[a for _, a in mail.cc], subject=mail.subject,
        sent_at=mail.sent_at, text=mail.text, html=mail.html, reply_text=mail.reply_text,
        in_reply_to=mail.in_reply_to, references=" ".join(mail.references) or None,
        thread_root=mail.thread_root,
        auto=verdict.auto, auto_reason=verdict.reason, threaded_by=placement.rule,
        threaded_ref=placement.ref, notes=mail.notes,
        thread_index=mail.header("Thread-Index")[:2000] or None,
        thread_topic=mail.header("Thread-Topic") or None, raw_id=raw_id,
        attachments=attachments)


@contextmanager
def _temporary_on_database_errors() -> Iterator[None]:
    """Database unreachable or locked: the sender should retry, so TemporaryFailure."""
    try:
        yield
    except IntegrityError:
        raise
    except (OperationalError, DBAPIError) as error:
        reason = " ".join(str(error.orig or error).split())  # one line for logs and stderr
        raise TemporaryFailure(f"database unavailable: {reason}") from error
