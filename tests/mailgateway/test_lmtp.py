"""LMTP (RFC 2033): LHLO instead of EHLO, and one answer per recipient after DATA."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

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
