"""The gateway's SMTP listener for the SMTP tests: `mailgateway run` as a real process on a
free loopback port, or the SmtpListener in this process, and a client that returns the
server's exact answer to each step."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, select

from mailgateway.config import load_settings
from mailgateway.runtime import Runtime
from mailgateway.smtp import SmtpListener, free_port
from models.schema import Message, RawMail
from tests.conftest import prepared_runtime, write_config

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
HOST = "127.0.0.1"


def mail(sender: str, subject: str, body: str = "Hello, it does not work.\n", *,
         to: str = "support@example.com", message_id: str | None = None,
         in_reply_to: str | None = None) -> bytes:
    """A customer's message as the bytes an MTA would relay, the same bytes on every retry."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@customer.test>"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(body)
    return message.as_bytes(policy=SMTP)  # CRLF: smtplib sends bytes as they are


def deliver(client: smtplib.SMTP, sender: str, recipients: list[str], data: bytes
            ) -> tuple[int, str]:
    """One transaction; the first refusal or the DATA answer, as (code, text).
    Refused recipients are skipped as an MTA would, unless every one is refused."""
    client.ehlo_or_helo_if_needed()
    code, text = client.mail(sender)
    if code != 250:
        client.rset()
        return code, text.decode()
    answers = [client.rcpt(r) for r in recipients]
    if not any(code == 250 for code, _ in answers):
        client.rset()
        return answers[0][0], answers[0][1].decode()
    code, text = client.data(data)
    return code, text.decode()


def send(port: int, data: bytes, *, sender: str = "ann@customer.test",
         recipients: tuple[str, ...] = ("support@example.com",), timeout: float = 30
         ) -> tuple[int, str]:
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        return deliver(client, sender, list(recipients), data)


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_for_port(port: int, process: subprocess.Popen | None = None, log: Path | None = None,
                  timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}:\n"
                                 f"{log.read_text() if log else ''}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {port} after {timeout} s") from None
            time.sleep(0.05)


@dataclass
class Gateway:
    """A configured instance: its config file, SMTP port, and a view of its database."""

    config: Path
    port: int
    runtime: Runtime
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self) -> None:
        """`mailgateway run`, returning once the listener answers."""
        self.log = self.config.parent / f"gateway-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(MAILGATEWAY), "--config", str(self.config), "--log-level", "warning",
                 "run"], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, whatever was in flight is cut off."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(MAILGATEWAY), "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    def ticket(self, ticket_id: int) -> dict:
        return json.loads(self.cli("ticket", "show", str(ticket_id), "--json").stdout)

    def copies(self, message_id: str) -> int:
        """How many stored messages carry this Message-ID (exactly once means 1)."""
        with self.runtime.sessions() as session:
            return session.scalar(select(func.count()).select_from(Message)
                                  .where(Message.message_id == message_id))

    def counts(self) -> tuple[int, int]:
        """(raw receipts, stored customer messages): our acknowledgements are not counted."""
        with self.runtime.sessions() as session:
            return (session.scalar(select(func.count()).select_from(RawMail)),
                    session.scalar(select(func.count()).select_from(Message)
                                   .where(Message.direction == "inbound")))


def configure(folder: Path, database_url: str, smtp: dict | None = None, **sections: dict
              ) -> tuple[Path, int]:
    port = free_port(HOST)
    config = write_config(folder, database_url, smtp={"enabled": True, "port": port,
                                                      **(smtp or {})},
                          web={"enabled": False}, **sections)
    return config, port


@contextmanager
def gateway_process(folder: Path, database_url: str, smtp: dict | None = None,
                    **sections: dict) -> Iterator[Gateway]:
    """`mailgateway run` (web off) on a free port; the database prepared here first so the
    test can look into it."""
    config, port = configure(folder, database_url, smtp, **sections)
    with prepared_runtime(load_settings(config)) as runtime:
        gateway = Gateway(config, port, runtime)
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


@contextmanager
def gateway_in_process(folder: Path, database_url: str, smtp: dict | None = None,
                       **sections: dict) -> Iterator[Gateway]:
    """The SmtpListener and its batcher in this process, on the same kind of config."""
    config, port = configure(folder, database_url, smtp, **sections)
    with prepared_runtime(load_settings(config)) as runtime:
        listener = SmtpListener(runtime)
        listener.start()
        wait_for_port(port)
        try:
            yield Gateway(config, port, runtime)
        finally:
            listener.stop()
