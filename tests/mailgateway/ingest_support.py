"""What the ingest tests share: the inbound corpus, receiving it, and reading the result back
the way scripts do (`ticket show --json`) or straight from the tables."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select

from mailgateway.cli import Context
from mailgateway.cli_setup import prepare_database
from mailgateway.cli_tickets import ticket as ticket_command
from mailgateway.config import load_settings
from mailgateway.ingest import IngestResult, Source, receive
from mailgateway.runtime import Runtime, open_runtime
from models import users
from models.schema import Agent, Direction, Message, RawMail
from models.tickets import MessageDraft, add_agent_reply, add_system_message, get_ticket
from tests.conftest import ROOT, write_config

CORPUS = ROOT / "tests" / "corpus" / "inbound"
FIRST_MAIL = "<8d1f0b52-3c6e-4e0a-9f6a-2b7c1e9d4a10@northwind.example>"  # Anna opens ticket 1
ACKNOWLEDGEMENT = "<ack.1.1717405321@example.com>"
AGENT_REPLY = "<reply.1.1717409012.4f2a@example.com>"


def runtime_with_two_queues(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """An initialised instance with queues Support (the default) and Billing."""
    config = write_config(tmp_path, database_url, queues=[
        {"name": "Support", "address": "support@example.com", "default": True},
        {"name": "Billing", "address": "billing@example.com", "acknowledge": False}])
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    yield runtime
    runtime.close()


def eml(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def deliver(runtime: Runtime, mail: str | bytes, *, recipients: tuple[str, ...] = (),
            kind: str = "smtp") -> IngestResult:
    """One message through receive(), as the SMTP listener hands it over."""
    data = eml(mail) if isinstance(mail, str) else mail
    return receive(runtime, data, Source(kind, "test", recipients))


def with_headers(data: bytes, *lines: str) -> bytes:
    """The message as the next hop sees it: an MTA or IMAP server adds lines on top."""
    newline = b"\r\n" if b"\r\n" in data[:200] else b"\n"
    return b"".join(line.encode() + newline for line in lines) + data


def set_header(data: bytes, name: str, value: str | None) -> bytes:
    """Replace (or, with None, drop) a header field, folded lines included."""
    head, separator, body = data.partition(b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n")
    newline = b"\r\n" if separator == b"\r\n\r\n" else b"\n"
    field = re.compile(rb"^" + re.escape(name.encode()) + rb":.*?(?=" + re.escape(newline)
                       + rb"(?![ \t])|\Z)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
    assert field.search(head), f"no {name} header"
    replacement = b"" if value is None else f"{name}: {value}".encode()
    head = field.sub(lambda _: replacement, head, count=1)
    if value is None:
        head = head.replace(newline + newline, newline).strip(b"\r\n")
    return head + separator + body


def show(runtime: Runtime, ticket_id: int) -> dict[str, Any]:
    """`mailgateway ticket show ID --json`, the command itself, run in this process."""
    import json

    context = Context(runtime.settings.path)
    try:
        result = CliRunner().invoke(ticket_command, ["show", str(ticket_id), "--json"],
                                    obj=context, catch_exceptions=False)
    finally:
        context.close()
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def inbound(shown: dict[str, Any]) -> list[dict[str, Any]]:
    """The mail that came in (our acknowledgements and answers are on the ticket too)."""
    return [m for m in shown["messages"] if m["direction"] == "inbound"]


def threaded(shown: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Which rule put each received message on the ticket, and by which reference."""
    return [(m["threaded_by"], m["threaded_ref"]) for m in inbound(shown)]


def agent(runtime: Runtime) -> int:
    with runtime.sessions.begin() as session:
        found = users.find_agent(session, "maria@example.com") or users.add_agent(
            session, "maria@example.com", name="Maria", password="a-long-password",
            must_change_password=False)
        return found.id


def answer(runtime: Runtime, ticket_id: int, message_id: str, *, system: bool = False) -> None:
    """Our own mail on a ticket, with the Message-ID it went out with: an agent's reply, or
    (system) the acknowledgement the gateway sent."""
    agent_id = None if system else agent(runtime)
    with runtime.sessions.begin() as session:
        found = get_ticket(session, ticket_id)
        draft = MessageDraft(
            direction=Direction.OUTBOUND, dedup_key=message_id, message_id=message_id,
            from_address="support@example.com", from_name="Support",
            to=[found.requester.email], subject=f"Re: [ACME #{ticket_id}] {found.subject}",
            text="Dear customer, we are on it.", reply_text="Dear customer, we are on it.")
        if system:
            add_system_message(session, found, draft)
        else:
            add_agent_reply(session, found, draft, agent=session.get(Agent, agent_id))


def stored_messages(runtime: Runtime, message_id: str) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Message)
                              .where(Message.message_id == message_id))


def raw_row(runtime: Runtime, raw_id: int) -> RawMail:
    with runtime.sessions() as session:
        found = session.get(RawMail, raw_id)
        assert found is not None
        return found


def corpus_path(name: str) -> Path:
    return CORPUS / f"{name}.eml"
