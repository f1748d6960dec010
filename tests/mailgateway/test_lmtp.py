"""LMTP (RFC 2033): LHLO instead of EHLO, and one answer per recipient after DATA."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from models.schema import RawMail
from tests.mailgateway.smtp_gateway import HOST, Gateway, gateway_in_process, mail


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    with gateway_in_process(tmp_path, database_url, smtp={"lmtp": True}) as started:
        yield started


class Conversation:
    """A plain-socket LMTP client: smtplib.LMTP reads only one answer after DATA."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.reply()  # greeting

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            lines.append(line.strip())
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.command("QUIT")
        self.sock.close()


def test_lmtp_answers_each_recipient_after_the_commit(gateway: Gateway) -> None:
    client = Conversation(gateway.port)
    try:
        assert client.command("EHLO mta.example.org").startswith("500")  # LMTP only
        assert client.command("LHLO mta.example.org").startswith("250")
        assert client.command("MAIL FROM:<ann@customer.test>").startswith("250")
        assert client.command("RCPT TO:<support@example.com>").startswith("250")
        assert client.command("RCPT TO:<sales@example.com>").startswith("250")
        assert client.command("RCPT TO:<x@elsewhere.test>").startswith("550")
        assert client.command("DATA").startswith("354")
        data = mail("ann@customer.test", "Over LMTP", message_id="<lmtp-1@customer.test>")
        client.sock.sendall(data + b"\r\n.\r\n")
        answers = [client.reply(), client.reply()]  # one per accepted recipient
    finally:
        client.close()
    assert all(a.startswith("250 2.0.0 created") for a in answers), answers
    assert gateway.copies("<lmtp-1@customer.test>") == 1


def test_lmtps_own_refusals_are_answered_for_each_recipient_too(tmp_path: Path,
                                                                 database_url: str) -> None:
    """Found by QA: 552 (too much data) comes from aiosmtpd, not our handler, and was sent
    once for two recipients: Postfix's lmtp client then waits for the second answer."""
    with gateway_in_process(tmp_path, database_url, smtp={"lmtp": True,
                                                          "max_message_size": 4096}) as small:
        client = Conversation(small.port)
        try:
            assert client.command("LHLO mta.example.org").startswith("250")
            assert client.command("MAIL FROM:<ann@customer.test>").startswith("250")
            assert client.command("RCPT TO:<support@example.com>").startswith("250")
            assert client.command("RCPT TO:<sales@example.com>").startswith("250")
            assert client.command("DATA").startswith("354")
            client.sock.sendall(mail("ann@customer.test", "big", "x" * 5000)
                                + b"\r\n.\r\n")
            answers = [client.reply(), client.reply()]
            assert client.command("NOOP").startswith("250")  # and the session is in step
        finally:
            client.close()
    assert all(a.startswith("552") for a in answers), answers


def test_lmtp_mail_is_recorded_as_come_by_lmtp(gateway: Gateway) -> None:
    client = Conversation(gateway.port)
    try:
        client.command("LHLO mta.example.org")
        client.command("MAIL FROM:<ann@customer.test>")
        client.command("RCPT TO:<support@example.com>")
        client.command("DATA")
        client.sock.sendall(mail("ann@customer.test", "source", message_id="<lmtp-2@customer.test>")
                            + b"\r\n.\r\n")
        assert client.reply().startswith("250")
    finally:
        client.close()
    with gateway.runtime.sessions() as session:
        assert session.scalar(select(RawMail.source)) == "lmtp:127.0.0.1"
