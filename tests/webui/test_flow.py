"""The whole way, as an agent lives it: a customer's mail comes in over SMTP to `mailgateway
run`, shows in the inbox, the agent answers it in Chromium with a file and sets it pending,
and the gateway's sender writes the reply for the requester and the Cc'd participant."""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.runtime import open_runtime
from models import users
from models.schema import Outbox
from tests.conftest import write_config
from tests.webui.browser import assert_accessible, log_in, screenshot
from tests.webui.conftest import ADMIN, PASSWORD

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
ENV = {**os.environ, "MAILGATEWAY_TEST_SECRET": "test-secret-key-0123456789"}


@dataclass
class Gateway:
    base: str
    smtp_port: int
    config: Path
    sent: Path  # where the directory transport writes each outgoing mail


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(process: subprocess.Popen, ports: tuple[int, ...], log: Path) -> None:
    deadline = time.monotonic() + 60
    for port in ports:
        while True:
            assert process.poll() is None, f"mailgateway run exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"nothing on port {port}:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, module_database_url: str) -> Iterator[Gateway]:
    """`mailgateway run` with its SMTP listener, web inbox and sender, and one admin."""
    folder = tmp_path_factory.mktemp("gateway")
    web, smtp = free_port(), free_port()
    config = write_config(folder, module_database_url, smtp={"port": smtp},
                          web={"port": web, "threads": 4})
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)  # what `mailgateway init` does, without a second process start
    with runtime.sessions.begin() as session:
        users.add_agent(session, ADMIN, name="Eve Admin", admin=True, password=PASSWORD,
                        must_change_password=False)
    runtime.close()
    log = folder / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(MAILGATEWAY), "--config", str(config), "run"],
                                   stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_for(process, (web, smtp), log)
        yield Gateway(f"http://127.0.0.1:{web}", smtp, config, load_settings(config).outbound.path)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_mail_in_over_smtp_answered_in_the_browser_goes_out_to_the_right_people(
        gateway: Gateway, browser, tmp_path: Path) -> None:
    question = EmailMessage()
    question["From"] = "Anna Schmidt <anna@customer.example>"
    question["To"] = "support@example.com"
    question["Cc"] = "Bob Lee <bob@shop.example>"
    question["Subject"] = "Invoice 2026-0412 charged twice"
    question["Message-ID"] = "<flow-1@customer.example>"
    question.set_content("Hello,\n\nmy card was charged twice for invoice 2026-0412.\n"
                         "Could you refund one of the charges?\n\nThanks,\nAnna")
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as smtp:
        smtp.send_message(question)  # 250 only after the commit

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, gateway.base, ADMIN)
    page.get_by_role("link", name="Invoice 2026-0412 charged twice").click()
    page.wait_for_url(f"{gateway.base}/tickets/*")
    ticket_id = int(page.url.rsplit("/", 1)[1])
    assert "my card was charged twice" in page.locator(".conversation").inner_text()
    assert_accessible(page)

    page.keyboard.press("r")
    page.keyboard.type("Hello Anna,\n\nwe refunded the second charge; the credit note is "
                       "attached.\n\nBest regards,\nEve")
    page.get_by_label("Bob Lee <bob@shop.example>").check()
    page.set_input_files("#reply-files", files=[{
        "name": "credit-note.pdf", "mimeType": "application/pdf",
        "buffer": b"%PDF-1.4 credit note 2026-0412"}])
    page.locator("#composer").scroll_into_view_if_needed()
    screenshot(page, "composer", tmp_path)
    page.get_by_role("button", name="Send and set pending").click()
    page.wait_for_url(f"{gateway.base}/tickets/{ticket_id}*")
    assert "Reply queued for anna@customer.example, bob@shop.example." in page.locator(
        ".flash").inner_text()
    assert page.locator(".facts .badge").inner_text() == "pending"
    page.goto(f"{gateway.base}/tickets/{ticket_id}")
    screenshot(page, "ticket", tmp_path)
    context.close()

    runtime = open_runtime(load_settings(gateway.config))
    try:
        with runtime.sessions() as session:
            [row] = session.scalars(select(Outbox).where(Outbox.ticket_id == ticket_id,
                                                         Outbox.kind == "reply")).all()
            assert row.recipients == ["anna@customer.example", "bob@shop.example"]
    finally:
        runtime.close()
    sent = _sent_reply(gateway.sent, row.id)
    assert sent["To"] == "anna@customer.example" and sent["Cc"] == "bob@shop.example"
    assert sent["Subject"] == f"Re: Invoice 2026-0412 charged twice [ACME #{ticket_id}]"
    assert sent["In-Reply-To"] == "<flow-1@customer.example>"
    assert "we refunded the second charge" in sent.get_body(("plain",)).get_content()
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_filename() == "credit-note.pdf"
    assert attachment.get_content() == b"%PDF-1.4 credit note 2026-0412"


def _sent_reply(folder: Path, outbox_id: int) -> EmailMessage:
    """The .eml the sender wrote for this outbox row (it runs beside the web inbox)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = sorted(folder.glob(f"*-{outbox_id}.eml")) if folder.is_dir() else []
        if found:
            return email.message_from_bytes(found[0].read_bytes(), policy=email.policy.default)
        time.sleep(0.1)
    raise AssertionError(f"no .eml for outbox row {outbox_id} in {folder}")
