"""A real SMTP relay for the outbound tests: aiosmtpd on a free loopback port that records
every mail it accepted, answering each DATA as the test scripts it (451, 550, hang...)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.runtime import Runtime, open_runtime
from mailgateway.smtp import free_port
from tests.conftest import write_config

Answer = Callable[[int, list[str]], str]  # (n-th DATA from 1, recipients) -> SMTP reply


@dataclass
class Delivery:
    envelope_from: str
    recipients: list[str]
    data: bytes

    @property
    def mail(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class Relay:
    answer: Answer = lambda n, rcpts: "250 2.0.0 OK"  # noqa: E731
    delivered: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    tls_context: object | None = None
    auth: tuple[str, str] | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
        self.attempts += 1
        reply = await asyncio.to_thread(self.answer, self.attempts, list(envelope.rcpt_tos))
        if reply.startswith("250"):
            self.delivered.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos),
                                           envelope.original_content))
        return reply

    def wait_for(self, count: int, timeout: float = 15) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.delivered) >= count, f"{len(self.delivered)} of {count} delivered"
        return self.delivered


@contextmanager
def running(relay: Relay, **options: object) -> Iterator[int]:
    """The relay listening on a free loopback port; yields the port."""
    port = free_port("127.0.0.1")
    controller = Controller(relay, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextmanager
def gateway(folder: Path, database_url: str, relay_port: int, **sections: dict
            ) -> Iterator[Runtime]:
    """An initialised gateway whose outbound relay is the test relay."""
    outbound = {"transport": "smtp", "host": "127.0.0.1", "port": relay_port, "tls": "none",
                "retry_delay": 1, "max_attempts": 3, "lease": 30, "timeout": 10}
    outbound.update(sections.pop("outbound", {}))
    config = write_config(folder, database_url, outbound=outbound, **sections)
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    try:
        yield runtime
    finally:
        runtime.close()


def wait_until(predicate: Callable[[], object], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

