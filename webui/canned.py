"""Canned responses: plain-text Jinja2 snippets in templates/canned/*.txt.

Admins write them; agents insert them into the composer. They render in a sandbox with a
few plain values (ticket, contact, agent), never with database rows, so a snippet can
neither reach the session nor call methods on a model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from jinja2 import FileSystemLoader, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from models.schema import Agent, Ticket
from webui.extensions import settings


@dataclass(frozen=True)
class TicketValues:
    id: int
    subject: str
    reference: str  # "[ACME #12]": what the customer quotes


@dataclass(frozen=True)
class PersonValues:
    name: str
    email: str


def folder() -> Path:
    from webui import templates_dir

    return templates_dir() / "canned"


def names() -> list[str]:
    return sorted(p.stem for p in folder().glob("*.txt") if p.is_file())


def render_for(name: str, ticket: Ticket, agent: Agent) -> str:
    """The snippet filled in for this ticket; "" for an unknown name or a broken snippet."""
    if name not in names():  # the name came from a request: only listed files are read
        return ""
    values = {
        "ticket": TicketValues(ticket.id, ticket.subject,
                               f"[{settings().tickets.tag} #{ticket.id}]"),
        "contact": PersonValues(ticket.requester.name, ticket.requester.email),
        "agent": PersonValues(agent.name, agent.email),
    }
    try:
        return _environment(folder()).get_template(f"{name}.txt").render(values).strip() + "\n"
    except TemplateError as error:
        return f"(canned response {name!r} could not be filled in: {error})\n"


@functools.cache
def _environment(root: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=FileSystemLoader(root), autoescape=False,
                                keep_trailing_newline=True, auto_reload=True)
