"""The tables. Typed SQLAlchemy 2.0 declarative models; behaviour lives in the domain modules."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NOTE = "note"


class Role(enum.StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


class RawState(enum.StrEnum):
    RECEIVED = "received"  # bytes on disk and a row; processing not finished
    STORED = "stored"  # became (or was a duplicate of) a Message
    IGNORED = "ignored"  # deliberately not a ticket message: our own mail, a loop
    QUARANTINED = "quarantined"  # could not be processed: kept with the error


class OutboxState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


class Contact(Base):
    __tablename__ = "contact"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Agent(Base):
    __tablename__ = "agent"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16), default=Role.AGENT)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    # the user protocol Flask-Login expects, without importing it here
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)


class Queue(Base):
    __tablename__ = "queue"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    address: Mapped[str] = mapped_column(String(320))


class Tag(Base):
    __tablename__ = "tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class TicketTag(Base):
    __tablename__ = "ticket_tag"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"),
                                           primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id", ondelete="CASCADE"),
                                        primary_key=True, index=True)


class Participant(Base):
    """Everyone on a ticket's conversation: the requester and whoever was Cc'd."""

    __tablename__ = "participant"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"),
                                           primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), primary_key=True,
                                            index=True)
    role: Mapped[str] = mapped_column(String(16), default="cc")  # requester | cc
    contact: Mapped[Contact] = relationship(lazy="joined")


class Ticket(Base):
    __tablename__ = "ticket"
    __table_args__ = (
        Index("ix_ticket_status_updated", "status", "updated_at"),
        Index("ix_ticket_queue_updated", "queue_id", "updated_at"),
        Index("ix_ticket_assignee_updated", "assignee_id", "updated_at"),
        Index("ix_ticket_priority_updated", "priority", "updated_at"),  # inbox sorted by priority
        # the inbox's sidebar counts, read from this index alone (no table rows)
        Index("ix_ticket_counts", "status", "queue_id", "assignee_id", "merged_into_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), default="new")
    priority: Mapped[str] = mapped_column(String(32), default="normal")
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id"))
    requester_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    snippet: Mapped[str] = mapped_column(String(300), default="")
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_customer_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_agent_at: Mapped[datetime | None] = mapped_column(DateTime)
    solved_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)

    # loaded on access: ingest touches one ticket at a time and finds queue and people in
    # the identity map; list queries ask for them with TICKET_PEOPLE (models/queries.py)
    queue: Mapped[Queue] = relationship()
    requester: Mapped[Contact] = relationship()
    assignee: Mapped[Agent | None] = relationship()
    participants: Mapped[list[Participant]] = relationship(
        cascade="all, delete-orphan", order_by="Participant.role.desc()")
    tags: Mapped[list[Tag]] = relationship(secondary="ticket_tag", order_by="Tag.name")


class RawMail(Base):
    """One received message's bytes (kept on disk by sha256) and what became of it."""

    __tablename__ = "raw_mail"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(200))  # smtp, pipe, imap:<account>, import
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default=RawState.RECEIVED, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    header_message_id: Mapped[str | None] = mapped_column(String(998))
    header_subject: Mapped[str] = mapped_column(Text, default="")
    header_from: Mapped[str] = mapped_column(Text, default="")
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[list[str] | None] = mapped_column(JSON)  # envelope RCPT TO, if known


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        Index("ix_message_ticket_created", "ticket_id", "created_at"),
        # threading out of order: "which stored reply names this message as its parent?"
        Index("ix_message_in_reply_to", "in_reply_to"),
        # ... and "which stored message is of the same conversation?" (parse.thread_root)
        Index("ix_message_thread_root", "thread_root"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    direction: Mapped[str] = mapped_column(String(16))
    # dedup: the Message-ID, or "sha256:<hash>" for mail without one; unique, so a
    # concurrent second delivery fails on insert instead of racing a lookup.
    dedup_key: Mapped[str] = mapped_column(String(998), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    thread_root: Mapped[str | None] = mapped_column(Text)  # inbound: the conversation's first id
    from_address: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    to: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)  # sanitized
    reply_text: Mapped[str] = mapped_column(Text, default="")
    auto: Mapped[str | None] = mapped_column(String(32))  # None: written by a person
    auto_reason: Mapped[str] = mapped_column(Text, default="")
    threaded_by: Mapped[str] = mapped_column(String(32), default="new")
    threaded_ref: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)  # truncation, decoding notices
    thread_index: Mapped[str | None] = mapped_column(String(2000))  # Outlook's Thread-Index
    thread_topic: Mapped[str | None] = mapped_column(Text)
    author_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id"))
    author_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_mail.id"))
    submission_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # outbox.id of our mail this bounce reports; no foreign key, which would make a cycle
    bounce_of_id: Mapped[int | None] = mapped_column(Integer, index=True)

    attachments: Mapped[list[Attachment]] = relationship(
        cascade="all, delete-orphan", order_by="Attachment.id")
    author_agent: Mapped[Agent | None] = relationship()
    ticket: Mapped[Ticket] = relationship()


class Attachment(Base):
    __tablename__ = "attachment"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"),
                                            index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    __tablename__ = "event"
    __table_args__ = (Index("ix_event_ticket_created", "ticket_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    kind: Mapped[str] = mapped_column(String(32))
    actor_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id"))
    actor_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("message.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    actor_agent: Mapped[Agent | None] = relationship(lazy="joined")
    actor_contact: Mapped[Contact | None] = relationship(lazy="joined")
    ticket: Mapped[Ticket] = relationship()
    message_row: Mapped[Message | None] = relationship()


class Outbox(Base):
    """One outgoing mail: what to send and its delivery state. The Message-ID is fixed
    when the row is written, so threading and bounces can find it before it leaves."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_next", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # reply | acknowledgement | notification
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("message.id"))
    rfc_message_id: Mapped[str] = mapped_column(String(998), unique=True)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    context: Mapped[dict] = mapped_column(JSON, default=dict)  # template name and values
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # so a flush writes the message before the mail that carries it (ids come from new_ids)
    message: Mapped[Message | None] = relationship(foreign_keys=[message_row_id])


class Suppression(Base):
    """An address that hard-bounced: automatic mail to it pauses until `until`."""

    __tablename__ = "suppression"
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(Text, default="")


class ImapState(Base):
    __tablename__ = "imap_state"
    __table_args__ = (UniqueConstraint("account", "folder"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(100))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[dict] = mapped_column(JSON, default=dict)  # folder count, token expiry...
    taken_day: Mapped[str] = mapped_column(String(10), default="")
    taken_today: Mapped[int] = mapped_column(Integer, default=0)


class KeyValue(Base):
    """Small durable facts the gateway keeps for itself (a rotated OAuth refresh token)."""

    __tablename__ = "key_value"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TicketView(Base):
    """An agent's last look at a ticket: the inbox's unread marker, and while the page
    stays open (a heartbeat renews present_until) the "also viewing" notice for others.
    In the database, not in memory, so every web process sees every viewer."""

    __tablename__ = "ticket_view"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"),
                                           primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"),
                                          primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    present_until: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    composing: Mapped[bool] = mapped_column(Boolean, default=False)
