"""Free-text search over messages (subject, body, sender address), by database dialect.

Migration 0002 keeps the index: an FTS5 table on SQLite, a tsvector column on PostgreSQL.
What an agent types is never passed as query syntax: it is cut into words, each one
quoted (FTS5) or parsed as plain text (plainto_tsquery), and every word must match.
"""

from __future__ import annotations

from sqlalchemy import Select, bindparam, func, literal_column, select, text
from sqlalchemy.orm import Session

from models.schema import Message

MAX_WORDS = 12


def search_words(query: str) -> list[str]:
    """The words of a query; a mail address stays one word (both indexes keep it whole)."""
    return [w.strip("\"'") for w in query.split() if w.strip("\"'")][:MAX_WORDS]


def matching_ticket_ids(session: Session, query: str) -> Select | None:
    """SELECT of the ids of tickets with a message matching every word; None for no words."""
    words = search_words(query)
    if not words:
        return None
    if session.get_bind().dialect.name == "sqlite":
        phrase = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        hits = text("SELECT rowid FROM message_fts WHERE message_fts MATCH :fts").bindparams(
            bindparam("fts", phrase)).columns(literal_column("rowid"))
        return select(Message.ticket_id).where(Message.id.in_(hits.subquery().select()))
    return select(Message.ticket_id).where(
        literal_column("message.search_vector").op("@@")(
            func.plainto_tsquery(literal_column("'simple'::regconfig"), " ".join(words))))
