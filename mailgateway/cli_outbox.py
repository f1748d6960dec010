"""`mailgateway outbox list|retry|purge|send`: what we sent, what failed, and why."""

from __future__ import annotations

import json
from typing import Any

import click

from mailgateway.cli import Context, cli, pass_context
from mailgateway.cli_tickets import iso
from mailgateway.jobs import PURGE_SENT_AFTER_DAYS, purge_sent
from models import outbox
from models.schema import Outbox, OutboxState


def outbox_json(row: Outbox) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind, "ticket": row.ticket_id, "state": row.state,
        "message_id": row.rfc_message_id, "recipients": row.recipients,
        "subject": row.context.get("subject", ""), "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at), "last_error": row.last_error or None,
        "created_at": iso(row.created_at), "sent_at": iso(row.sent_at),
    }


@cli.group("outbox")
def outbox_group() -> None:
    """Outgoing mail: list, retry a failed one, purge old sent ones."""


@outbox_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in OutboxState]))
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@pass_context
def list_(ctx: Context, state: str | None, limit: int, as_json: bool) -> None:
    """The newest outgoing mails first, with their delivery state."""
    with ctx.runtime.sessions() as session:
        rows = [outbox_json(r) for r in outbox.list_outbox(session, state=state, limit=limit)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        ticket = f"#{r['ticket']}" if r["ticket"] else "-"
        error = f"\t{r['last_error']}" if r["last_error"] else ""
        click.echo(f"{r['id']}\t{r['state']}\t{r['kind']}\t{ticket}\t"
                   f"{', '.join(r['recipients'])}\t{r['subject']}{error}")


@outbox_group.command("retry")
@click.argument("outbox_id", type=int)
@pass_context
def retry(ctx: Context, outbox_id: int) -> None:
    """Queue a failed mail again now; the running sender takes it at its next sweep."""
    with ctx.runtime.sessions.begin() as session:
        row = outbox.retry(session, outbox_id)
        click.echo(f"outbox {row.id} queued again for {', '.join(row.recipients)}")


@outbox_group.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=0),
              default=PURGE_SENT_AFTER_DAYS, show_default=True, help="Days since sending.")
@pass_context
def purge(ctx: Context, days: int) -> None:
    """Delete sent mails older than DAYS (failed ones stay until retried)."""
    click.echo(f"purged {purge_sent(ctx.runtime, days)} sent outbox rows")


@outbox_group.command("send")
@pass_context
def send(ctx: Context) -> None:
    """Send everything due now and exit (for cron, or without `mailgateway run`)."""
    from mailgateway.sender import Sender

    sweep = Sender(ctx.runtime).send_due()
    click.echo(f"sent {sweep.sent}, retry later {sweep.retried}, failed {sweep.failed}")
