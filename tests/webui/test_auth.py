"""Agent login over real HTTP: `mailgateway run` as a process, a cookie-keeping stdlib client."""

from __future__ import annotations

import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPMessage
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from mailgateway.demo import CONVERSATIONS
from tests.conftest import write_config

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
CSRF = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')
DEMO_SUBJECT = CONVERSATIONS[0][2]
TEMP_AGENT = "newbie@example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Answer:
    status: int
    path: str  # where the client ended up, after any redirects it followed
    headers: HTTPMessage
    body: str

    @property
    def csrf_token(self) -> str:
        found = CSRF.search(self.body)
        assert found, f"no csrf_token on {self.path}"
        return html.unescape(found.group(1))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args, **_kwargs):  # type: ignore[no-untyped-def]
        return None  # urllib then hands the 3xx back as an HTTPError, which we answer with


@dataclass
class Browser:
    """One agent's browser: cookies kept between requests; follows redirects unless told."""

    base: str
    jar: CookieJar = field(default_factory=CookieJar)

    def request(self, path: str, form: dict[str, str] | None = None, *,
                follow: bool = True) -> Answer:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self.jar)]
        if not follow:
            handlers.append(NoRedirect())
        opener = urllib.request.build_opener(*handlers)
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            response = opener.open(self.base + path, data=data, timeout=10)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            return Answer(response.status, urllib.parse.urlsplit(response.geturl()).path,
                          response.headers, response.read().decode())

    def get(self, path: str, **kwargs: bool) -> Answer:
        return self.request(path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: bool) -> Answer:
        return self.request(path, form, **kwargs)

    def log_in(self, email: str, password: str) -> Answer:
        token = self.get("/login").csrf_token
        return self.post("/login", {"csrf_token": token, "email": email, "password": password})


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    config: Path
    admin: tuple[str, str]
    newbie_password: str

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def browser(self) -> Browser:
        return Browser(self.base)

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


ENV = {**os.environ, "MAILGATEWAY_TEST_SECRET": "test-secret-key-0123456789"}


def command(config: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(MAILGATEWAY), "--config", str(config), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mailgateway run exited early:\n{log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text()}")


@contextmanager
def running(folder: Path, database_url: str) -> Iterator[Server]:
    """`mailgateway run` on a free port with the demo data and one agent who must change
    the password they were given; killed afterwards if a test has not stopped it."""
    port = free_port()
    config = write_config(folder, database_url, smtp={"enabled": False},
                          web={"port": port, "threads": 4})
    admin = re.search(r"demo admin: (\S+)  password: (\S+)", command(config, "init", "--demo"))
    newbie = re.search(r"password: (\S+)", command(config, "agent", "add", TEMP_AGENT))
    assert admin and newbie
    log = folder / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(MAILGATEWAY), "--config", str(config), "run"],
                                   stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_for_port(process, port, log)
        yield Server(f"http://127.0.0.1:{port}", process, log, config, admin.groups(),
                     newbie.group(1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url: str) -> Iterator[Server]:
    """One server per database for the module: each test brings its own cookie jar."""
    with running(tmp_path_factory.mktemp("server"), module_database_url) as started:
        yield started


def assert_logged_out(browser: Browser) -> None:
    answer = browser.get("/")
    assert (answer.status, answer.path) == (200, "/login") and DEMO_SUBJECT not in answer.body


def test_root_without_login_redirects_to_login(server: Server) -> None:
    answer = server.browser().get("/", follow=False)
    assert answer.status == 302
    assert urllib.parse.urlsplit(answer.headers["Location"]).path == "/login"


def test_login_page_sets_a_strict_session_cookie_and_a_csrf_token(server: Server) -> None:
    answer = server.browser().get("/login")
    assert answer.status == 200 and answer.csrf_token
    assert_strict_session_cookie(answer)


def assert_strict_session_cookie(answer: Answer) -> None:
    [session] = [c for c in answer.headers.get_all("Set-Cookie") if c.startswith("session=")]
    attributes = {part.strip().lower() for part in session.split(";")}
    assert "httponly" in attributes and "samesite=lax" in attributes


def test_login_without_csrf_token_is_refused(server: Server) -> None:
    browser = server.browser()
    browser.get("/login")
    email, password = server.admin
    answer = browser.post("/login", {"email": email, "password": password})
    assert answer.status == 400
    assert_logged_out(browser)


def test_wrong_password_is_refused(server: Server) -> None:
    browser = server.browser()
    answer = browser.log_in(server.admin[0], server.admin[1] + "-wrong")
    assert answer.status == 401 and "Wrong email or password" in answer.body
    assert browser.log_in("nobody@example.com", server.admin[1]).status == 401
    assert_logged_out(browser)


def test_login_shows_the_inbox_and_logout_ends_the_session(server: Server) -> None:
    browser = server.browser()
    answer = browser.log_in(*server.admin)
    assert (answer.status, answer.path) == (200, "/")
    assert html.escape(DEMO_SUBJECT) in answer.body

    refused = browser.post("/logout", {})  # no token: refused, still logged in
    assert refused.status == 400
    inbox = browser.get("/")
    assert (inbox.status, inbox.path) == (200, "/")

    answer = browser.post("/logout", {"csrf_token": inbox.csrf_token})
    assert (answer.status, answer.path) == (200, "/login")
    assert_logged_out(browser)


def test_a_deactivated_agent_is_logged_out_at_the_next_request(server: Server) -> None:
    email = "leaver@example.com"
    command(server.config, "agent", "add", email, "--password-stdin",
            stdin="a leaver's password\n")
    browser = server.browser()
    assert browser.log_in(email, "a leaver's password").path == "/"
    command(server.config, "agent", "deactivate", email)
    assert_logged_out(browser)
    assert browser.log_in(email, "a leaver's password").status == 401


@pytest.mark.parametrize("target", [
    "//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example"])
def test_login_never_sends_an_agent_to_another_site(server: Server, target: str) -> None:
    browser = server.browser()
    token = browser.get("/login").csrf_token
    email, password = server.admin
    answer = browser.post(f"/login?next={urllib.parse.quote(target)}",
                          {"csrf_token": token, "email": email, "password": password},
                          follow=False)
    location = answer.headers["Location"]
    assert answer.status == 302 and location.startswith("/") and not location.startswith("//")
    assert "\\" not in location and "evil.example" not in urllib.parse.urlsplit(location).netloc


def test_login_keeps_a_local_next_page(server: Server) -> None:
    browser = server.browser()
    token = browser.get("/login").csrf_token
    answer = browser.post("/login?next=/%3Fview%3Dmine",
                          {"csrf_token": token, "email": server.admin[0],
                           "password": server.admin[1]}, follow=False)
    assert (answer.status, answer.headers["Location"]) == (302, "/?view=mine")
    assert_strict_session_cookie(answer)


def test_forced_password_change_blocks_every_page_until_done(server: Server) -> None:
    browser = server.browser()
    answer = browser.log_in(TEMP_AGENT, server.newbie_password)
    assert (answer.status, answer.path) == (200, "/password")
    for page in ("/", "/login", "/tickets/1", "/no-such-page"):
        assert browser.get(page).path == "/password", page

    form = browser.get("/password")
    wrong = browser.post("/password", {"csrf_token": form.csrf_token, "current": "not it at all",
                                       "new": "my own password", "confirm": "my own password"})
    assert wrong.path == "/password" and "not your current password" in wrong.body
    assert browser.get("/").path == "/password"

    changed = browser.post("/password", {
        "csrf_token": form.csrf_token, "current": server.newbie_password,
        "new": "my own password", "confirm": "my own password"})
    assert (changed.status, changed.path) == (200, "/")
    assert html.escape(DEMO_SUBJECT) in changed.body

    again = server.browser()
    assert again.log_in(TEMP_AGENT, server.newbie_password).status == 401
    assert again.log_in(TEMP_AGENT, "my own password").path == "/"


def test_sigterm_stops_run_with_exit_code_zero(tmp_path: Path, database_url: str) -> None:
    with running(tmp_path, database_url) as server:
        assert server.browser().get("/login").status == 200
        started = time.monotonic()
        assert server.stop(timeout=10) == 0, server.log.read_text()
        assert time.monotonic() - started < 5
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
