"""An agent's reply: an outbound Message and its outbox row, written in one transaction.

Also the header rules every mail we send on a ticket shares (acknowledgements use them
too): which customer message it answers, the References chain, and a subject that
threads in every client without growing "Re: Re: [ACME #1] [ACME #1]".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.bounces import suppressed_until
from models.outbox import Kind, enqueue, new_message_id, with_ids
from models.schema import Agent, Direction, Message, Ticket
from models.tickets import (
    AttachmentDraft,
    MessageDraft,
    add_agent_reply,
    change_status_quietly,
)

# Reply and forward prefixes in the languages our customers write in (Outlook localises them).
PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|ref|rif|tr|odp|r|回复|回覆|答复|转发)\s*(?:\[\d+\]|\(\d+\))?"
    r"\s*[:：]\s*)+", re.IGNORECASE)
KEEP_FIRST_REFERENCES, KEEP_LAST_REFERENCES = 1, 10


def tag_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\s*\[{re.escape(tag)}\s*#\d+\]\s*", re.IGNORECASE)


def base_subject(subject: str, tag: str) -> str:
    """The subject without reply prefixes, our ticket tags or line breaks."""
    subject = " ".join(subject.split())  # a CR/LF in a subject never reaches a header
    previous = None
    while previous != subject:
        previous = subject
        subject = tag_pattern(tag).sub(" ", PREFIX.sub("", subject)).strip()
    return subject


def reply_subject(subject: str, tag: str, ticket_id: int) -> str:
    """"Re: <subject> [TAG #id]": one Re:, one tag, whatever the customer's client did."""
    base = base_subject(subject, tag)
    return f"Re: {base} [{tag} #{ticket_id}]" if base else f"Re: [{tag} #{ticket_id}]"


def answered_message(session: Session, ticket: Ticket) -> Message | None:
    """The customer's latest mail written by a person, else the latest mail with an id:
    what our In-Reply-To names, so the reply sits under it in the customer's client."""
    with_ids(session, ticket)
    candidates = (
        select(Message).where(Message.ticket_id == ticket.id, Message.message_id.is_not(None),
                              Message.direction != Direction.NOTE)
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(1))
    human = candidates.where(Message.direction == Direction.INBOUND, Message.auto.is_(None))
    return session.scalar(human) or session.scalar(candidates)


def references_after(parent: Message | None, root: str | None = None) -> str | None:
    """The conversation's root, the parent's References (or its In-Reply-To, when a phone
    client dropped them) and the parent's Message-ID, trimmed to the first and the last ten
    (RFC 5322 3.6.4 allows trimming; the root and the recent ones are what clients match)."""
    if parent is None or not parent.message_id:
        return None
    known = [*(parent.references or parent.in_reply_to or "").split(), parent.message_id]
    chain: list[str] = [root] if root and root not in known else []
    for mid in known:
        if mid not in chain:
            chain.append(mid)
    if len(chain) > KEEP_FIRST_REFERENCES + KEEP_LAST_REFERENCES:
        chain = chain[:KEEP_FIRST_REFERENCES] + chain[-KEEP_LAST_REFERENCES:]
    return " ".join(chain)


def conversation_root(session: Session, ticket: Ticket) -> str | None:
    """The Message-ID of the ticket's first mail: the thread every client already knows."""
    return session.scalar(
        select(Message.message_id).where(Message.ticket_id == ticket.id,
                                         Message.message_id.is_not(None),
                                         Message.direction != Direction.NOTE)
        .order_by(Message.created_at, Message.id).limit(1))


def threading_context(parent: Message | None, root: str | None = None) -> dict:
    """What compose needs to thread a mail under `parent`, Outlook's headers included."""
    return {
        "in_reply_to": parent.message_id if parent else None,
        "references": references_after(parent, root),
        "thread_topic": parent.thread_topic if parent else None,
        "parent_thread_index": parent.thread_index if parent else None,
    }


def delivery_warning(session: Session, ticket: Ticket) -> str | None:
    """Shown with a reply when the requester's address hard-bounced lately: it still goes."""
    until = suppressed_until(session, ticket.requester.email)
    if until is None:
        return None
    return (f"{ticket.requester.email} bounced recently (automatic mail paused until "
            f"{until:%Y-%m-%d %H:%M} UTC); this reply is sent anyway")


def queue_reply(
    session: Session, ticket: Ticket, *, agent: Agent, text: str, tag: str,
    cc: Sequence[str] = (), attachments: Sequence[AttachmentDraft] = (),
    status_after: str | None = None, submission_key: str | None = None,
) -> Message:
    """The reply as a Message on the ticket plus its outbox row; the Message-ID is fixed here.
    The same submission_key again (a double click, a resent form) returns the first reply and
    queues nothing: the unique column decides, even between two concurrent requests."""
    if submission_key:
        existing = _submitted(session, submission_key)
        if existing is not None:
            return existing
    parent = answered_message(session, ticket)
    queue = ticket.queue
    rfc_id = new_message_id(queue.address)
    threading = threading_context(parent, conversation_root(session, ticket))
    warning = delivery_warning(session, ticket)
    draft = MessageDraft(
        direction=Direction.OUTBOUND, dedup_key=rfc_id, message_id=rfc_id,
        from_address=queue.address, from_name=agent.name, to=[ticket.requester.email],
        cc=[c.strip().lower() for c in cc if c.strip()],
        subject=reply_subject(ticket.subject, tag, ticket.id), text=text, reply_text=text,
        in_reply_to=threading["in_reply_to"], references=threading["references"],
        thread_topic=threading["thread_topic"], submission_key=submission_key,
        notes=[warning] if warning else [], attachments=list(attachments),
    )
    try:
        with session.begin_nested():
            message = add_agent_reply(session, ticket, draft, agent=agent)
            enqueue(session, kind=Kind.REPLY, recipients=[*draft.to, *draft.cc],
                    rfc_message_id=rfc_id, ticket=ticket, message=message,
                    context=mail_context("reply", queue.name, draft, threading,
                                         values={"agent": agent.name}))
    except IntegrityError:
        existing = _submitted(session, submission_key) if submission_key else None
        if existing is None:
            raise
        return existing
    if status_after:
        change_status_quietly(session, ticket, status_after, actor=agent)
    return message


def mail_context(template: str, queue_name: str, draft: MessageDraft, threading: dict, *,
                 values: dict, auto: str | None = None) -> dict:
    """The outbox row's context: everything compose needs but the body of a stored Message."""
    return {
        "template": template, "queue": queue_name, "auto": auto,
        "from_address": draft.from_address, "to": draft.to, "cc": draft.cc,
        "subject": draft.subject, **threading, "values": values,
    }


def _submitted(session: Session, submission_key: str) -> Message | None:
    return session.scalar(select(Message).where(Message.submission_key == submission_key))
