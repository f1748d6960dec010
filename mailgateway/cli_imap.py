"""`mailgateway imap status` and `mailgateway imap test NAME`: is each mailbox being read,
and can an admin prove that no mail was missed?"""

from __future__ import annotations

import sys
from datetime import datetime

import click

from mailgateway.cli import Context, cli, pass_context
from mailgateway.config import ImapAccount
from mailgateway.imap_auth import AccountProblem, authenticator
from mailgateway.imap_client import (
    TRANSIENT,
    check_folder,
    connected,
    describe,
    open_folder,
    reconcile,
)
from mailgateway.imap_lock import AccountLock
from models import mailboxes
from models.schema import ImapState, utcnow

TEST_TIMEOUT = 15  # seconds per network step: an admin is waiting


@cli.group()
def imap() -> None:
    """IMAP mailboxes: what the pollers are doing, and a login test."""


@imap.command("status")
@click.option("--offline", is_flag=True, help="Only what the database knows; do not connect.")
@pass_context
def status(ctx: Context, offline: bool) -> None:
    """Every account: connected, last success and error, UIDVALIDITY, last UID, taken today,
    and (connecting now) whether every message in the folder was taken."""
    runtime = ctx.runtime
    accounts = runtime.settings.imap
    if not accounts:
        click.echo("no [[imap]] accounts in the configuration")
        return
    with runtime.sessions() as session:
        states = mailboxes.account_states(session)
    for account in accounts:
        state = states.get(account.name)
        for line in _status_lines(account, state):
            click.echo(line)
        if account.enabled:
            click.echo(f"  poller: {_poller(runtime.engine, account, state)}")
        if not offline and account.enabled:
            click.echo(f"  folder: {_reconciliation(account, state, runtime.sessions)}")
        click.echo()


def _status_lines(account: ImapAccount, state: ImapState | None) -> list[str]:
    mode = "IDLE" if account.idle else f"polling every {account.poll_interval} s"
    head = (f"{account.name}: {account.user}@{account.host}:{account.port} {account.folder} "
            f"({'enabled' if account.enabled else 'disabled'}, {mode})")
    if state is None:
        return [head, "  never connected"]
    facts = state.status or {}
    lines = [
        head,
        f"  connected: {'yes' if state.connected else 'no'}",
        f"  last success: {_when(state.last_success_at)}",
        f"  last error: {state.last_error or 'none'}"
        + (f" (at {_when(state.last_error_at)})" if state.last_error else ""),
        f"  UIDVALIDITY: {state.uidvalidity if state.uidvalidity is not None else 'not yet known'}"
        f", last UID taken: {state.last_uid}",
        f"  taken today: {state.taken_today if state.taken_day == _today() else 0}",
    ]
    if facts.get("warning"):
        lines.append(f"  warning: {facts['warning']}")
    return lines


def _poller(engine, account: ImapAccount, state: ImapState | None) -> str:  # noqa: ANN001
    holder = (state.status or {}).get("holder", "") if state else ""
    held = AccountLock(engine, account.name).taken_elsewhere()
    if held is None:  # SQLite: one process; only what it recorded
        return f"process {holder} (as last recorded)" if holder else "none recorded yet"
    if held:
        return f"a gateway process holds the account's lock (last recorded: {holder or '?'})"
    return "no gateway process polls this account now"


def _reconciliation(account: ImapAccount, state: ImapState | None, sessions) -> str:  # noqa: ANN001
    try:
        with connected(account, authenticator(account, sessions), TEST_TIMEOUT) as client:
            found = reconcile(client, account.folder, state.last_uid if state else 0,
                              (state.status or {}).get("unreadable", []) if state else [])
    except (AccountProblem, *TRANSIENT) as error:
        return f"cannot check: {describe(error, account)}"
    return found.sentence(state.uidvalidity if state else None)


@imap.command("test")
@click.argument("name")
@pass_context
def test(ctx: Context, name: str) -> None:
    """Log in to account NAME and show its folder and the server's capabilities;
    say plainly what is wrong if that fails (exit status 1)."""
    runtime = ctx.runtime
    account = next((a for a in runtime.settings.imap if a.name == name), None)
    if account is None:
        names = ", ".join(a.name for a in runtime.settings.imap) or "none"
        raise click.ClickException(f"no [[imap]] account named {name!r} (configured: {names})")
    security = "implicit TLS" if account.tls else "STARTTLS" if account.starttls else "no TLS"
    click.echo(f"connecting to {account.host}:{account.port} ({security}) as {account.user} "
               f"({account.auth})")
    auth = authenticator(account, runtime.sessions)
    try:
        with connected(account, auth, TEST_TIMEOUT) as client:
            click.echo("logged in")
            folder = open_folder(client, account.folder)
            click.echo(f"{account.folder}: {folder.exists} messages, UIDVALIDITY "
                       f"{folder.uidvalidity}, next UID {folder.uidnext}")
            if account.processed_folder:
                check_folder(client, account.processed_folder)
                click.echo(f"processed folder {account.processed_folder}: exists")
            capabilities = sorted(c.decode() for c in client.capabilities())
            click.echo(f"capabilities: {' '.join(capabilities)}")
            click.echo(_what_will_happen(account, capabilities))
    except (AccountProblem, *TRANSIENT) as error:
        click.echo(f"FAILED: {describe(error, account)}", err=True)
        sys.exit(1)
    if warning := auth.warning():
        click.echo(f"warning: {warning}")


def _what_will_happen(account: ImapAccount, capabilities: list[str]) -> str:
    if account.idle and "IDLE" in capabilities:
        wait = "waits in IDLE (new mail within about a second)"
    else:
        why = "idle = false" if not account.idle else "the server has no IDLE"
        wait = f"polls every {account.poll_interval} s ({why})"
    if not account.processed_folder:
        after = "flags taken messages \\Seen"
    else:
        how = "MOVE" if "MOVE" in capabilities else "COPY + \\Deleted + EXPUNGE"
        after = f"flags taken messages \\Seen and moves them to {account.processed_folder} ({how})"
    return f"the gateway {wait} and {after}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def _today() -> str:
    return utcnow().date().isoformat()
