"""A real, throwaway Dovecot IMAP server on loopback for the IMAP tests
(../shared/recipes/dovecot.md): password logins, XOAUTH2 against a token introspection
server the test controls, optional TLS (implicit and STARTTLS) with a private CA."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import func, select

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.imap import Timing, imap_service
from mailgateway.runtime import Runtime, open_runtime
from mailgateway.service import Service
from models import mailboxes
from models.schema import Direction, ImapState, Message, Ticket
from tests.conftest import write_config

CONFIG = """\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
mail_location = maildir:{tmp}/mail/%u
passdb {{
  driver = passwd-file
  args = {tmp}/users
  mechanisms = plain login
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {tmp}/dovecot-oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={tmp}/home/%u allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
{tls_listener}  chroot =
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
"""

TLS = """\
ssl = yes
ssl_cert = <{tmp}/server.pem
ssl_key = <{tmp}/server.key
"""

TLS_LISTENER = """\
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
"""

OAUTH2 = """\
introspection_url = http://127.0.0.1:{port}/introspect
introspection_mode = post
username_attribute = username
active_attribute = active
active_value = true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mail(message_id: str, subject: str, *, sender: str = "Ivy <ivy@customer.test>",
         body: str = "Something is wrong.", **headers: str) -> bytes:
    """A customer's message as the bytes a mail server would hold."""
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "support@example.com"
    m["Subject"] = subject
    m["Message-ID"] = message_id
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(body)
    return bytes(m)


class FormEndpoint:
    """A loopback HTTP server answering form POSTs with JSON, as OAuth endpoints do:
    `answer(form)` gives the status and the JSON body."""

    def __init__(self, answer: Callable[[dict[str, str]], tuple[int, dict]]) -> None:
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                outer.requests.append(form)
                status, reply = answer(form)
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Introspection(FormEndpoint):
    """The OAuth2 token introspection endpoint Dovecot asks on every XOAUTH2 login."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}  # access token -> user name
        super().__init__(self.answer)

    @property
    def seen(self) -> list[str]:
        return [form.get("token", "") for form in self.requests]

    def answer(self, form: dict[str, str]) -> tuple[int, dict]:
        user = self.tokens.get(form.get("token", ""))
        return 200, {"active": True, "username": user} if user else {"active": False}


def make_certificates(folder: Path) -> None:
    """A private CA (ca.pem) and a server certificate for 127.0.0.1 and localhost it signed."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")


class Dovecot:
    """One Dovecot instance: its folder under /tmp (the recipe's permissions), its port,
    users with passwords, and the introspection server for XOAUTH2 logins."""

    def __init__(self, *, users: dict[str, str] | None = None, tls: bool = False,
                 settings: str = "") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))
        self.tmp.chmod(0o755)
        for sub in ("run", "state", "mail", "home"):
            (self.tmp / sub).mkdir()
        shutil.chown(self.tmp / "mail", "dovecot", "dovecot")
        shutil.chown(self.tmp / "home", "dovecot", "dovecot")
        self.users = users or {"support": "secret"}
        (self.tmp / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        self.introspection = Introspection()
        (self.tmp / "dovecot-oauth2.conf.ext").write_text(
            OAUTH2.format(port=self.introspection.port))
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.ca_file = self.tmp / "ca.pem" if tls else None
        if tls:
            make_certificates(self.tmp)
        config = (TLS if tls else "ssl = no\n").format(tmp=self.tmp) + CONFIG.format(
            tmp=self.tmp, port=self.port,
            tls_listener=TLS_LISTENER.format(tls_port=self.tls_port) if tls else "")
        (self.tmp / "dovecot.conf").write_text(config + settings)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, **options: object) -> Iterator[Dovecot]:
        server = cls(**options)  # type: ignore[arg-type]
        try:
            server.start()
            yield server
        finally:
            server.stop()
            server.introspection.close()
            shutil.rmtree(server.tmp, ignore_errors=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.tmp / "dovecot.conf")], start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=1
            ) as s:
                if s.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start: {self.log()[-500:]}")

    def stop(self) -> None:
        """Stop the whole process group: killing only the master leaves sessions serving."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait()
        self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.05)

    def log(self) -> str:
        path = self.tmp / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, user: str = "support") -> IMAPClient:
        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        c.login(user, self.users[user])
        return c

    @contextlib.contextmanager
    def session(self, user: str = "support", folder: str = "INBOX") -> Iterator[IMAPClient]:
        c = self.client(user)
        try:
            c.select_folder(folder)
            yield c
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def append(self, raw: bytes, folder: str = "INBOX", *, user: str = "support",
               flags: tuple[bytes, ...] = ()) -> int:
        """Put a message in as if it had just arrived; returns its UID."""
        c = self.client(user)
        try:
            answer = c.append(folder, raw, flags=flags)
        finally:
            c.logout()
        return int(answer.split(b"]")[0].split()[-1])

    def create_folder(self, folder: str, user: str = "support") -> None:
        c = self.client(user)
        try:
            c.create_folder(folder)
        finally:
            c.logout()

    def folder(self, folder: str = "INBOX", user: str = "support") -> dict[int, set[bytes]]:
        """UID -> flags of every message in the folder."""
        with self.session(user, folder) as c:
            return {uid: set(flags) for uid, flags in c.get_flags(c.search("ALL")).items()}

    def uidvalidity(self, folder: str = "INBOX", user: str = "support") -> int:
        c = self.client(user)
        try:
            return int(c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
        finally:
            c.logout()

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(["doveadm", "-c", str(self.tmp / "dovecot.conf"), *args],
                              capture_output=True, text=True, check=True)
        return done.stdout

    def deliver(self, raw: bytes, user: str = "support") -> None:
        """Put a message into INBOX without IMAP, as a delivery agent writing the maildir
        does: works while the server is stopped (doveadm save needs its auth service)."""
        new = self.tmp / "mail" / user / "new"
        name = f"{time.time_ns()}.P{os.getpid()}.test"
        (new.parent / "tmp" / name).write_bytes(raw)
        shutil.chown(new.parent / "tmp" / name, "dovecot", "dovecot")
        os.rename(new.parent / "tmp" / name, new / name)

    def damage(self, message_id: str, user: str = "support") -> None:
        """Make the server unable to read a message's file, as disk damage would."""
        for path in (self.tmp / "mail" / user).glob("*/*"):
            if path.parent.name in ("new", "cur") and message_id.encode() in path.read_bytes():
                path.chmod(0)
                return
        raise AssertionError(f"no message {message_id} in the maildir")

    def set_uidvalidity(self, value: int, folder: str = "INBOX", user: str = "support") -> None:
        """What recreating the folder with the same messages looks like to a client."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)


def imap_account(server: Dovecot, **overrides: object) -> dict:
    """An [[imap]] table for write_config(imap=[...]) reading this server over loopback;
    the password comes from TEST_IMAP_PASSWORD."""
    account = {"name": "support", "host": "127.0.0.1", "port": server.port, "tls": False,
               "user": "support", "password_env": "TEST_IMAP_PASSWORD", "folder": "INBOX",
               "idle": True, "poll_interval": 1}
    account.update(overrides)
    return account


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05):  # noqa: ANN001, ANN201
    """Poll until predicate() is truthy; return (value, seconds it took). Fails on timeout."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {predicate.__doc__ or predicate}")
        time.sleep(step)


FAST = Timing(first_retry=0.1, max_retry=0.5, problem_retry=0.3, lock_retry=0.2,
              lock_check=1.0, idle_check=0.2)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.running() as server:
        yield server


class Gateway:
    """A runtime on the test database and the IMAP service, started and stopped at will."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder, self.database_url = folder, database_url
        self.runtime: Runtime | None = None
        self.service: Service | None = None

    def configure(self, *accounts: dict, **sections: dict) -> Path:
        path = write_config(self.folder, self.database_url, imap=list(accounts), **sections)
        self.runtime = open_runtime(load_settings(path))
        prepare_database(self.runtime)
        return path

    def start(self, receive_message=None) -> Runtime:  # noqa: ANN001
        self.service = imap_service(self.runtime, receive_message, FAST)
        self.service.start()
        return self.runtime

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def state(self, account: str = "support") -> ImapState | None:
        with self.runtime.sessions() as session:
            return mailboxes.account_states(session).get(account)

    def last_uid(self, account: str = "support") -> int:
        state = self.state(account)
        return state.last_uid if state else 0

    def connected(self, account: str = "support") -> bool:
        state = self.state(account)
        return bool(state and state.connected)

    def tickets(self) -> dict[str, list[int]]:
        """Message-ID -> tickets of the customers' messages stored under it (one each, if all
        is well). Our own acknowledgements are stored too, and left out here."""
        with self.runtime.sessions() as session:
            rows = session.execute(select(Message.message_id, Message.ticket_id)
                                   .where(Message.direction == Direction.INBOUND)).all()
        found: dict[str, list[int]] = {}
        for message_id, ticket_id in rows:
            found.setdefault((message_id or "").strip("<>"), []).append(ticket_id)
        return found

    def ticket_count(self) -> int:
        with self.runtime.sessions() as session:
            return session.scalar(select(func.count()).select_from(Ticket))


def _gateway(folder: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Gateway]:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "secret")
    gateway = Gateway(folder, database_url)
    yield gateway
    gateway.stop()
    if gateway.runtime is not None:
        gateway.runtime.close()


@pytest.fixture
def gateway(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[Gateway]:
    """On each test database: for tests of what the poller records."""
    yield from _gateway(tmp_path, database_url, monkeypatch)


@pytest.fixture
def sqlite_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """On SQLite only: for tests whose subject is the server conversation, not the database."""
    yield from _gateway(tmp_path, f"sqlite:///{tmp_path}/test.db", monkeypatch)
