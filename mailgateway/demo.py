"""`init --demo`: an admin to log in with and a few conversations to look at."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from mailgateway.runtime import Runtime
from models import users
from models.customer_mail import add_customer_message, open_ticket
from models.queues import queue_named
from models.schema import Agent, Direction, utcnow
from models.tickets import MessageDraft

DEMO_ADMIN = "admin@example.com"
CONVERSATIONS = [
    ("Anna Schmidt", "anna@customer.example", "Invoice 2026-0412 charged twice",
     ["Hello, my credit card was charged twice for invoice 2026-0412. Can you refund one?",
      "Any news? The second charge is still on my statement."]),
    ("Bob Lee", "bob@shop.example", "Cannot log in after password reset",
     ["I reset my password this morning and now the login page says my account is locked."]),
    ("Chloé Martin", "chloe@agence.example", "Export to CSV drops accents",
     ["When I export my contacts to CSV, names like Chloé become ChloÃ©. Is there a setting?"]),
]


def add_demo(runtime: Runtime) -> tuple[str, str] | None:
    """The admin's login (shown once), or None when the demo agent already exists."""
    password = users.random_password()
    with runtime.sessions.begin() as session:
        if users.find_agent(session, DEMO_ADMIN):
            return None
        users.add_agent(session, DEMO_ADMIN, name="Demo Admin", admin=True, password=password,
                        must_change_password=False)
        if session.scalar(select(func.count()).select_from(Agent)) > 1:
            return DEMO_ADMIN, password
        queue = queue_named(session, runtime.settings.default_queue.name)
        start = utcnow() - timedelta(days=1)
        for n, (name, address, subject, bodies) in enumerate(CONVERSATIONS):
            ticket = None
            for k, body in enumerate(bodies):
                draft = MessageDraft(
                    direction=Direction.INBOUND, dedup_key=f"<demo-{n}-{k}@mailgateway.invalid>",
                    message_id=f"<demo-{n}-{k}@mailgateway.invalid>", from_address=address,
                    from_name=name, to=[queue.address],
                    subject=f"Re: {subject}" if k else subject,
                    sent_at=start + timedelta(hours=n, minutes=10 * k), text=body, reply_text=body,
                )
                if ticket is None:
                    ticket, _ = open_ticket(session, draft, queue=queue)
                else:
                    add_customer_message(session, ticket, draft)
    return DEMO_ADMIN, password
