"""Who looked at a ticket when: the unread marker and the "also viewing" notice.

A page heartbeat renews an agent's presence every few seconds; presence lapses on its own
when the heartbeats stop, so a crashed browser never leaves a ghost viewer behind.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.schema import TicketView, utcnow

PRESENCE_SECONDS = 45


def record_view(session: Session, ticket_id: int, agent_id: int, *, present: bool = True,
                composing: bool = False) -> TicketView:
    """The agent sees the ticket now; `present=False` when the page closes."""
    now = utcnow()
    until = now + timedelta(seconds=PRESENCE_SECONDS) if present else now
    view = session.get(TicketView, (ticket_id, agent_id))
    if view is None:
        try:
            with session.begin_nested():
                view = TicketView(ticket_id=ticket_id, agent_id=agent_id)
                session.add(view)
        except IntegrityError:  # the same agent's other tab inserted it first
            view = session.get(TicketView, (ticket_id, agent_id), populate_existing=True)
            assert view is not None
    view.seen_at = now
    view.present_until = until
    view.composing = composing and present
    return view
