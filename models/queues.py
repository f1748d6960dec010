"""Queues are configured in config.toml; the database mirrors them so tickets can point at one."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.schema import Queue


def sync_queues(session: Session, queues: Iterable[tuple[str, str]]) -> dict[str, Queue]:
    """Create or update a Queue row per (name, address); rows of removed queues stay for history."""
    existing = {q.name: q for q in session.scalars(select(Queue))}
    for name, address in queues:
        queue = existing.get(name)
        if queue is None:
            queue = existing[name] = Queue(name=name, address=address.lower())
            session.add(queue)
        else:
            queue.address = address.lower()
    session.flush()
    return existing


def queue_named(session: Session, name: str) -> Queue | None:
    """Looked up once per session: the ingest path asks for every new ticket."""
    known = session.info.setdefault("queues", {})
    if name not in known:
        known[name] = session.scalar(select(Queue).where(Queue.name == name))
    return known[name]
