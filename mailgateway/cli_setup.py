"""`init`, `check-config` and `run`: set up a database, check a file, start the services."""

from __future__ import annotations

import click

from mailgateway.cli import Context, cli, pass_context
from mailgateway.runtime import Runtime
from models.db import upgrade
from models.queues import sync_queues


def prepare_database(runtime: Runtime) -> str:
    """Schema at the newest revision and queues as config.toml names them; idempotent."""
    revision = upgrade(runtime.engine)
    with runtime.sessions.begin() as session:
        sync_queues(session, [(q.name, q.address) for q in runtime.settings.queues])
    return revision


@cli.command()
@click.option("--demo", is_flag=True, help="Add an admin (password shown once) and sample tickets.")
@pass_context
def init(ctx: Context, demo: bool) -> None:
    """Create or upgrade the database schema; safe to run again."""
    runtime = ctx.runtime
    revision = prepare_database(runtime)
    click.echo(f"database ready at revision {revision}: {runtime.engine.url.render_as_string()}")
    if demo:
        from mailgateway.demo import add_demo

        login = add_demo(runtime)
        if login:
            click.echo(f"demo admin: {login[0]}  password: {login[1]}  (shown once)")
        else:
            click.echo("demo data already present")


@cli.command("check-config")
@pass_context
def check_config(ctx: Context) -> None:
    """Validate the configuration file and print a summary."""
    s = ctx.settings
    smtp = f"{s.smtp.host}:{s.smtp.port}" if s.smtp.enabled else "off"
    accepted = ", ".join([*(f"@{d}" for d in s.smtp.domains), *s.smtp.addresses]) or "nothing"
    click.echo(f"config: {s.path}")
    click.echo(f"database: {s.database.url}")
    click.echo(f"storage: {s.storage.path}")
    click.echo(f"smtp listener: {smtp} accepting {accepted}")
    for account in s.imap:
        state = "enabled" if account.enabled else "disabled"
        click.echo(f"imap {account.name}: {account.user}@{account.host}:{account.port} "
                   f"{account.folder} ({state}, {'IDLE' if account.idle else 'polling'})")
    relay = (f"smtp {s.outbound.host}:{s.outbound.port} tls={s.outbound.tls}"
             if s.outbound.transport == "smtp" else f"directory {s.outbound.path}")
    click.echo(f"outbound: {relay}")
    click.echo(f"web: http://{s.web.host}:{s.web.port}/" if s.web.enabled else "web: off")
    click.echo(f"tickets: [{s.tickets.tag} #n], statuses {', '.join(s.tickets.statuses)}")
    for q in s.queues:
        click.echo(f"queue {q.name}: {q.address}{' (default)' if q.default else ''}")
    click.echo("configuration OK")


@cli.command()
@pass_context
def run(ctx: Context) -> None:
    """Start every enabled service in one process; stop on SIGINT or SIGTERM."""
    from mailgateway.service import run_services

    prepare_database(ctx.runtime)
    run_services(ctx.runtime)
