"""Free-text search over messages (subject, body, sender address), by database dialect.

Migration 0002 keeps the index: an FTS5 table on SQLite, a tsvector column on PostgreSQL.
What an agent types is never passed as query syntax: it is cut into words, each one
quoted (FTS5) or parsed as plain text (plainto_tsquery), and every word must match.
"""

from __future__ import annotations

from sqlalchemy import (
    ColumnElement,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.orm import Session

from models.schema import Message, Ticket

MAX_WORDS = 12
# Above this many matching messages a word is common: walking the tickets in page order and
# probing each one's messages fills a page sooner than listing every match's ticket.
COMMON = 20_000


def search_words(query: str) -> list[str]:
    """The words of a query; a mail address stays one word (both indexes keep it whole)."""
    return [w.strip("\"'") for w in query.split() if w.strip("\"'")][:MAX_WORDS]


def ticket_matches(session: Session, query: str) -> ColumnElement[bool] | None:
    """A condition on Ticket: some message of it matches every word; None for no words."""
    words = search_words(query)
    if not words:
        return None
    if session.get_bind().dialect.name != "sqlite":
        hit = literal_column("message.search_vector").op("@@")(
            func.plainto_tsquery(literal_column("'simple'::regconfig"), " ".join(words)))
        return Ticket.id.in_(select(Message.ticket_id).where(hit))
    phrase = " ".join('"' + w.replace('"', '""') + '"' for w in words)
    hits = text("SELECT rowid FROM message_fts WHERE message_fts MATCH :fts").bindparams(
        bindparam("fts", phrase)).columns(literal_column("rowid"))
    counted = text("SELECT count(*) FROM (SELECT rowid FROM message_fts "
                   "WHERE message_fts MATCH :fts LIMIT :cap)")
    if session.scalar(counted, {"fts": phrase, "cap": COMMON}) < COMMON:
        return Ticket.id.in_(select(Message.ticket_id).where(Message.id.in_(hits)))
    # "+message.id": SQLite must not drive the probe from the match list; it looks up each
    # ticket's messages by ticket_id and checks them against the list, built once.
    return exists().where(Message.ticket_id == Ticket.id,
                          literal_column("+message.id").in_(hits))
