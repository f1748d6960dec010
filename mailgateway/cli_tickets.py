"""`mailgateway ticket list|show`: tickets for people and, with --json, for scripts and backups.

The JSON names are a contract: scripts rely on them; add fields, never rename.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from mailgateway.cli import Context, cli, pass_context
from models import queries
from models.schema import Event, Message, Ticket
from models.tickets import get_ticket


def iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "queue": ticket.queue.name,
        "requester": ticket.requester.email,
        "assignee": ticket.assignee.email if ticket.assignee else None,
        "tags": [t.name for t in ticket.tags],
        "message_count": ticket.message_count,
        "merged_into": ticket.merged_into_id,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
    }


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id, "message_id": m.message_id, "direction": m.direction,
        "from": m.from_address, "from_name": m.from_name, "to": m.to, "cc": m.cc,
        "subject": m.subject, "date": iso(m.sent_at), "received_at": iso(m.created_at),
        "text": m.text, "reply_text": m.reply_text, "html": m.html, "auto": m.auto,
        "auto_reason": m.auto_reason or None, "threaded_by": m.threaded_by,
        "threaded_ref": m.threaded_ref or None, "in_reply_to": m.in_reply_to,
        "notes": m.notes, "bounce_of": m.bounce_of_id,
        "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size,
                         "sha256": a.sha256, "content_id": a.content_id, "inline": a.inline}
                        for a in m.attachments],
    }


def event_json(e: Event) -> dict[str, Any]:
    actor = e.actor_agent.email if e.actor_agent else (
        e.actor_contact.email if e.actor_contact else None)
    return {"kind": e.kind, "actor": actor, "old": e.old, "new": e.new,
            "message": e.message_row_id, "at": iso(e.created_at)}


@cli.group()
def ticket() -> None:
    """Look at tickets."""


@ticket.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@pass_context
def list_(ctx: Context, as_json: bool) -> None:
    """List every ticket."""
    with ctx.runtime.sessions() as session:
        rows = [ticket_json(t) for t in queries.all_tickets(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for t in rows:
        click.echo(f"#{t['id']}\t{t['status']}\t{t['requester']}\t{t['subject']}")


@ticket.command("show")
@click.argument("ticket_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_context
def show(ctx: Context, ticket_id: int, as_json: bool) -> None:
    """Show a ticket with its people, history and messages."""
    with ctx.runtime.sessions() as session:
        found = get_ticket(session, ticket_id)
        data = ticket_json(found) | {
            "participants": [{"address": p.contact.email, "name": p.contact.name, "role": p.role}
                             for p in queries.ticket_participants(session, found.id)],
            "events": [event_json(e) for e in queries.ticket_events(session, found.id)],
            "messages": [message_json(m) for m in queries.ticket_messages(session, found.id)],
        }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"#{data['id']} {data['subject']}\n{data['status']} / {data['priority']} / "
               f"{data['queue']} / requester {data['requester']} / assignee {data['assignee']}")
    for m in data["messages"]:
        click.echo(f"\n--- {m['direction']} from {m['from']} at {m['received_at']} "
                   f"({m['threaded_by']})\n{m['reply_text'] or m['text']}")
