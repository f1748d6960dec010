"""The sender against a real SMTP relay on loopback: retries, failures, a killed sender,
the wake-up after a commit, TLS with a private CA and AUTH; and the directory transport."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgateway.runtime import Runtime
from mailgateway.sender import DirectoryTransport, Sender
from models.customer_mail import open_ticket
from models.events import EventKind
from models.replies import queue_reply
from models.schema import Message, Outbox, OutboxState, utcnow
from models.tickets import get_ticket
from models.users import find_agent
from tests.mailgateway.relay import Relay, gateway, running, wait_until
from tests.models.factories import agent, default_queue, events, inbound

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")


def reply(runtime: Runtime, text: str = "Refunded.", to: str = "anna@customer.example") -> int:
    """An agent's reply queued and committed; returns its outbox id."""
    with runtime.sessions.begin() as s:
        smith = find_agent(s, "agent@example.com") or agent(s)
        ticket, _ = open_ticket(s, inbound(to), queue=default_queue(s))
        message = queue_reply(s, ticket, agent=smith, text=text, tag="ACME")
        return s.scalar(select(Outbox.id).where(Outbox.message_row_id == message.id))


def state(runtime: Runtime, outbox_id: int) -> Outbox:
    with runtime.sessions() as s:
        return s.get(Outbox, outbox_id)


def test_451_then_250_gets_exactly_one_delivery(tmp_path: Path, database_url: str) -> None:
    relay = Relay(answer=lambda n, _: "451 4.7.1 Greylisted" if n == 1 else "250 2.0.0 OK")
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        oid = reply(runtime)
        sender = Sender(runtime)
        first = sender.send_due()
        assert (first.sent, first.retried) == (0, 1) and relay.delivered == []
        row = state(runtime, oid)
        assert row.state == OutboxState.QUEUED and "451 4.7.1 Greylisted" in row.last_error
        # not due before its backoff (asked at a fixed moment: a loaded machine is slow)
        assert sender.send_due(now=row.next_attempt_at - timedelta(milliseconds=100)).sent == 0
        assert sender.send_due(now=row.next_attempt_at).sent == 1
        assert sender.send_due(now=utcnow() + timedelta(days=1)).sent == 0
        [delivery] = relay.delivered
        assert delivery.mail["Message-ID"] == row.rfc_message_id
        assert state(runtime, oid).state == OutboxState.SENT and relay.attempts == 2
        sent_at = state(runtime, oid).sent_at
        with runtime.sessions() as s:
            assert s.get(Message, row.message_row_id).sent_at == sent_at  # shown on the ticket


def test_550_fails_the_mail_with_the_relays_answer(tmp_path: Path, database_url: str) -> None:
    relay = Relay(answer=lambda n, _: "550 5.1.1 <anna@customer.example>: no such user")
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        oid = reply(runtime)
        assert Sender(runtime).send_due().failed == 1
        row = state(runtime, oid)
        assert row.state == OutboxState.FAILED and row.attempts == 1
        assert row.last_error == "550 5.1.1 <anna@customer.example>: no such user"
        with runtime.sessions() as s:
            [event] = events(s, get_ticket(s, row.ticket_id), EventKind.DELIVERY_FAILED)
            assert "no such user" in event.new
        assert relay.delivered == []


def test_an_unreachable_relay_is_retried_then_given_up(tmp_path: Path, database_url: str) -> None:
    from mailgateway.smtp import free_port

    with gateway(tmp_path, database_url, free_port("127.0.0.1"),
                 outbound={"max_attempts": 2}) as runtime:
        oid = reply(runtime)
        sender = Sender(runtime)
        assert sender.send_due().retried == 1
        row = state(runtime, oid)
        assert row.state == OutboxState.QUEUED and "refused" in row.last_error.lower()
        sender.send_due(now=row.next_attempt_at)
        row = state(runtime, oid)
        assert row.state == OutboxState.FAILED and "gave up after 2 attempts" in row.last_error


def test_a_commit_that_queues_mail_wakes_the_sender(tmp_path: Path, database_url: str) -> None:
    relay = Relay()
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        sender = Sender(runtime)
        sender.start()
        try:
            oid = reply(runtime)  # no one calls wake(): the commit does
            relay.wait_for(1, timeout=10)
            wait_until(lambda: state(runtime, oid).state == OutboxState.SENT)
        finally:
            sender.stop()


def test_a_sender_killed_after_the_relays_250_does_not_send_again(
        tmp_path: Path, database_url: str) -> None:
    """Mail A gets its 250 and is marked sent; the sender is SIGKILLed while the relay holds
    mail B. The next sender, once B's lease ran out, sends B and never A again."""
    release = threading.Event()

    def answer(n: int, _: list[str]) -> str:
        if n == 2:  # mail B: keep the sender waiting until it is killed
            release.wait(30)
            return "451 4.3.0 too late"
        return "250 2.0.0 OK"

    relay = Relay(answer=answer)
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        a, b = reply(runtime, "mail A"), reply(runtime, "mail B")
        process = subprocess.Popen([str(MAILGATEWAY), "--config", str(runtime.settings.path),
                                    "outbox", "send"], stderr=subprocess.PIPE)
        try:
            wait_until(lambda: relay.attempts == 2 and state(runtime, a).state == "sent")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            release.set()
            process.kill()
        assert state(runtime, b).state == OutboxState.SENDING  # held by the dead sender
        assert Sender(runtime).send_due().sent == 0  # its lease still runs
        later = utcnow() + timedelta(seconds=runtime.settings.outbound.lease + 1)
        assert Sender(runtime).send_due(now=later).sent == 1
        sent_ids = [d.mail["Message-ID"] for d in relay.delivered]
        assert sent_ids == [state(runtime, a).rfc_message_id, state(runtime, b).rfc_message_id]
        assert state(runtime, b).state == OutboxState.SENT and state(runtime, b).attempts == 2


def test_directory_transport_writes_each_mail_whole(tmp_path: Path, runtime: Runtime) -> None:
    folder = tmp_path / "sent"
    oid = reply(runtime)
    assert Sender(runtime, transport=DirectoryTransport(folder)).send_due().sent == 1
    [written] = folder.iterdir()
    assert written.suffix == ".eml" and not list(folder.glob(".*"))
    mail = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    row = state(runtime, oid)
    assert mail["Message-ID"] == row.rfc_message_id and row.state == OutboxState.SENT
    assert f"+b{oid}-" in mail["Return-Path"]


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "relay.key", "-out", "relay.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "relay.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "relay.pem")
    return folder / "ca.pem", folder / "relay.pem", folder / "relay.key"


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def _tls_relay_options(cert: Path, key: Path) -> dict:
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login, auth_data.password) == (b"gateway", b"relay-secret")
        return AuthResult(success=ok, handled=False)

    return {"tls_context": context, "require_starttls": True, "authenticator": authenticate,
            "auth_required": True}


@contextmanager
def tls_gateway(tmp_path: Path, database_url: str, certificates, monkeypatch, *,
                password: str = "relay-secret", trust_our_ca: bool = True
                ) -> Iterator[tuple[Relay, Runtime]]:
    """A relay that insists on STARTTLS and AUTH, with a certificate from our private CA."""
    ca, cert, key = certificates
    monkeypatch.setenv("RELAY_PASSWORD", password)
    outbound = {"tls": "starttls", "user": "gateway", "password_env": "RELAY_PASSWORD"}
    if trust_our_ca:
        outbound["ca_file"] = str(ca)
    relay = Relay()
    with running(relay, **_tls_relay_options(cert, key)) as port, gateway(
            tmp_path, database_url, port, outbound=outbound) as runtime:
        yield relay, runtime


def test_starttls_verified_against_a_private_ca_with_auth(
        tmp_path: Path, database_url: str, certificates, monkeypatch) -> None:
    with tls_gateway(tmp_path, database_url, certificates, monkeypatch) as (relay, runtime):
        reply(runtime)
        assert Sender(runtime).send_due().sent == 1
        assert len(relay.delivered) == 1


def test_an_unverifiable_relay_certificate_is_retried_not_trusted(
        tmp_path: Path, database_url: str, certificates, monkeypatch) -> None:
    with tls_gateway(tmp_path, database_url, certificates, monkeypatch,
                     trust_our_ca=False) as (relay, runtime):
        oid = reply(runtime)
        assert Sender(runtime).send_due().retried == 1
        assert "CERTIFICATE_VERIFY_FAILED" in state(runtime, oid).last_error
        assert relay.delivered == []


def test_the_relay_refusing_our_login_is_retried_not_failed(
        tmp_path: Path, database_url: str, certificates, monkeypatch) -> None:
    with tls_gateway(tmp_path, database_url, certificates, monkeypatch,
                     password="wrong") as (relay, runtime):
        oid = reply(runtime)
        assert Sender(runtime).send_due().retried == 1
        assert "535" in state(runtime, oid).last_error
        assert relay.delivered == []
