"""`mailgateway agent ...`: accounts for the people who answer tickets."""

from __future__ import annotations

import sys

import click

from mailgateway.cli import Context, cli, pass_context
from models import users


@cli.group()
def agent() -> None:
    """Manage agents."""


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, must_change): one read from stdin is the agent's own; else a random one."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return users.random_password(), True


@agent.command("add")
@click.argument("email")
@click.option("--name", default="")
@click.option("--admin", is_flag=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_context
def add(ctx: Context, email: str, name: str, admin: bool, password_stdin: bool) -> None:
    """Add an agent; without --password-stdin a random password is printed once."""
    password, must_change = _password(password_stdin)
    with ctx.runtime.sessions.begin() as session:
        new = users.add_agent(session, email, name=name, admin=admin, password=password,
                              must_change_password=must_change)
        click.echo(f"added {new.role} {new.email}")
    if must_change:
        click.echo(f"password: {password}  (shown once; to be changed at first login)")


@agent.command("list")
@pass_context
def list_(ctx: Context) -> None:
    """List agents."""
    with ctx.runtime.sessions() as session:
        for a in users.list_agents(session):
            state = "active" if a.active else "inactive"
            click.echo(f"{a.email}\t{a.name}\t{a.role}\t{state}")


@agent.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_context
def set_password(ctx: Context, email: str, password_stdin: bool) -> None:
    """Reset a password; without --password-stdin a random one, to be changed at next login."""
    password, must_change = _password(password_stdin)
    with ctx.runtime.sessions.begin() as session:
        users.set_password(session, users.get_agent(session, email), password,
                           must_change=must_change)
    click.echo(f"password of {email} changed")
    if must_change:
        click.echo(f"password: {password}  (shown once; to be changed at next login)")


@agent.command("deactivate")
@click.argument("email")
@pass_context
def deactivate(ctx: Context, email: str) -> None:
    """Stop an agent from logging in; their history stays."""
    with ctx.runtime.sessions.begin() as session:
        users.deactivate(session, users.get_agent(session, email))
    click.echo(f"{email} deactivated")
