"""The web inbox's fixtures: an instance per module and database, mail delivered through the
real ingest path, a logged-in Flask client, the app served by waitress, headless Chromium."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mailgateway.cli_setup import prepare_database
from mailgateway.config import Settings, load_settings
from mailgateway.ingest import IngestResult, Source, receive, retry_quarantined
from mailgateway.outbound_steps import followup_policy
from mailgateway.runtime import Runtime, open_runtime
from models import users
from tests.conftest import write_config
from webui import create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-password"
ADMIN, AGENT, OTHER = "eve@example.com", "bob@example.com", "carol@example.com"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@dataclass
class Instance:
    settings: Settings
    runtime: Runtime
    app: Flask
    folder: Path

    def deliver(self, raw: bytes, recipients: tuple[str, ...] = ("support@example.com",)
                ) -> IngestResult:
        """Mail through the gateway's own ingest path, as the SMTP listener hands it over."""
        result = receive(self.runtime, raw, Source("smtp", "test", recipients))
        assert result.ticket, result
        return result

    def client(self, email: str = AGENT) -> Client:
        client = Client(self.app.test_client())
        client.log_in(email)
        return client


@pytest.fixture(scope="module")
def instance(tmp_path_factory, module_database_url: str) -> Iterator[Instance]:
    """A gateway with an admin and two agents; the web app built as `mailgateway run` builds it."""
    folder = tmp_path_factory.mktemp("instance")
    mailbox = {"name": "support", "host": "imap.example.com", "user": "support@example.com"}
    settings = load_settings(write_config(folder, module_database_url, imap=[mailbox]))
    runtime = open_runtime(settings)
    prepare_database(runtime)
    with runtime.sessions.begin() as session:
        for email, name, admin in ((ADMIN, "Eve Admin", True), (AGENT, "Bob Agent", False),
                                   (OTHER, "Carol Agent", False)):
            users.add_agent(session, email, name=name, admin=admin, password=PASSWORD,
                            must_change_password=False)
    app = create_app(settings, runtime.sessions, store=runtime.store,
                     retry_quarantined=functools.partial(retry_quarantined, runtime),
                     followup_policy=followup_policy(settings))
    yield Instance(settings, runtime, app, folder)
    runtime.close()


class Client:
    """A logged-in agent's Flask test client that sends the CSRF token with every POST."""

    def __init__(self, client: FlaskClient) -> None:
        self.raw = client
        self.token = ""

    def log_in(self, email: str) -> None:
        page = self.raw.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert token
        answer = self.raw.post("/login", data={"csrf_token": token.group(1), "email": email,
                                               "password": PASSWORD})
        assert answer.status_code == 302, answer.get_data(as_text=True)
        self.token = self.page("/").token

    def page(self, path: str, status: int = 200) -> Page:
        answer = self.raw.get(path)
        assert answer.status_code == status, (path, answer.status_code)
        return Page(answer)

    def post(self, path: str, data: dict | None = None, *, status: int | None = None,
             csrf: bool = True) -> TestResponse:
        data = {**(data or {}), **({"csrf_token": self.token} if csrf else {})}
        answer = self.raw.post(path, data=data, content_type="multipart/form-data")
        if status is not None:
            assert answer.status_code == status, (path, answer.status_code,
                                                  answer.get_data(as_text=True)[:2000])
        return answer


class Page:
    def __init__(self, answer: TestResponse) -> None:
        self.answer = answer
        self.html = answer.get_data(as_text=True)

    @property
    def token(self) -> str:
        found = CSRF_META.search(self.html)
        assert found
        return found.group(1)

    def field(self, name: str) -> str:
        return field(self.html, name)


def field(html: str, name: str) -> str:
    """The value of the first input with this name (a form's hidden key, seen, held)."""
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{name}"', html)
    assert found, name
    return found.group(1)


def mail(subject: str, body: str = "Hello.", *, sender: str = "anna@customer.example",
         name: str = "Anna Schmidt", html: str | None = None, cc: tuple[str, ...] = (),
         attachments: tuple[tuple[str, str, bytes], ...] = (), in_reply_to: str | None = None,
         message_id: str | None = None, related: tuple[tuple[str, str, bytes], ...] = ()
         ) -> bytes:
    """A customer's mail as it comes over the wire."""
    message = EmailMessage()
    message["From"] = f"{name} <{sender}>"
    message["To"] = "support@example.com"
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="customer.example")
    if in_reply_to:
        message["In-Reply-To"] = message["References"] = in_reply_to
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for cid, content_type, data in related:  # images the HTML shows by cid:
        maintype, subtype = content_type.split("/")
        message.get_payload()[1].add_related(data, maintype=maintype, subtype=subtype,
                                             cid=f"<{cid}>", filename=f"{cid}.{subtype}")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


@dataclass
class Served:
    base: str
    instance: Instance


@pytest.fixture(scope="module")
def served(instance: Instance) -> Iterator[Served]:
    """The app on a real port (waitress, as `mailgateway run` serves it) for the browser."""
    from waitress.server import create_server

    server = create_server(instance.app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.effective_port}", instance)
    server.close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    """One headless Debian Chromium per module; it cannot download browsers, nor needs to."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
