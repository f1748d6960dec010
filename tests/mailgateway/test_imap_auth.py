"""Logins the way Gmail and Microsoft 365 want them (XOAUTH2, from a token command or our
own refresh-token exchange) and TLS with a private CA, against a real Dovecot whose
oauth2 passdb asks a token introspection server the test runs on loopback."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgateway.config import ImapAccount
from mailgateway.imap_auth import AccountProblem, CommandToken, LoginFailed, authenticator
from mailgateway.imap_client import connect
from models import mailboxes
from tests.dovecot import Dovecot, FormEndpoint, Gateway, imap_account, mail, wait_for


def printing(text: str, counter: Path | None = None) -> str:
    """A token_command printing text (and counting its runs in a file)."""
    code = f"import sys; sys.stdout.write({text!r})"
    if counter is not None:
        code += f"; open({str(counter)!r}, 'a').write('x')"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


class TokenEndpoint(FormEndpoint):
    """An OAuth token endpoint that rotates the refresh token on every use, as Microsoft
    does: an old refresh token is refused with invalid_grant."""

    def __init__(self) -> None:
        self.current = "refresh-1"
        super().__init__(self.answer)
        self.url = f"http://127.0.0.1:{self.port}/token"

    def answer(self, form: dict[str, str]) -> tuple[int, dict]:
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
                "refresh_token", "client-1", "client-secret"):
            return 401, {"error": "invalid_client"}
        if form.get("refresh_token") != self.current:
            return 400, {"error": "invalid_grant", "error_description": "token was rotated"}
        self.current = f"refresh-{int(self.current.split('-')[1]) + 1}"
        return 200, {"access_token": "good-token", "token_type": "Bearer", "expires_in": 3600,
                     "refresh_token": self.current, "refresh_token_expires_in": 3 * 86400}


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


def test_xoauth2_with_a_token_command_reads_the_mailbox(
        dovecot: Dovecot, sqlite_gateway: Gateway) -> None:
    dovecot.introspection.tokens["good-token"] = "support"
    sqlite_gateway.configure(imap_account(dovecot, auth="xoauth2", password_env="",
                                          token_command=printing("good-token\n")))
    sqlite_gateway.start()
    dovecot.append(mail("<oauth@customer.test>", "Sent to a Microsoft 365 mailbox"))
    wait_for(lambda: "oauth@customer.test" in sqlite_gateway.tickets())
    assert dovecot.introspection.seen == ["good-token"]


def test_a_rejected_token_is_a_login_failure_and_is_asked_for_again(
        dovecot: Dovecot, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    account = ImapAccount(**{**imap_account(dovecot), "auth": "xoauth2", "password_env": "",
                             "token_command": printing(
                                 '{"access_token": "stale", "expires_in": 3600}', counter)})
    auth = authenticator(account, None)  # type: ignore[arg-type] -- no database needed
    for _ in range(2):
        with pytest.raises(LoginFailed, match=r"login as support refused: .*AUTHENTICATIONFAILED"):
            connect(account, auth)
    assert counter.read_text() == "xx", "a refused token is not reused"


def test_a_token_command_printing_json_is_run_again_only_near_expiry(tmp_path: Path) -> None:
    counter, now = tmp_path / "runs", [1000.0]
    source = CommandToken(printing('{"access_token": "t1", "expires_in": 600}', counter),
                          clock=lambda: now[0])
    assert [source.token(), source.token()] == ["t1", "t1"] and counter.read_text() == "x"
    now[0] += 600 - 30  # within a minute of the end: fetch a new one
    assert source.token() == "t1" and counter.read_text() == "xx"

    bare = CommandToken(printing("plain-token\n", counter))
    assert [bare.token(), bare.token()] == ["plain-token", "plain-token"]
    assert counter.read_text() == "xxxx", "a bare token is fetched at every login"

    failing = CommandToken(f"{shlex.quote(sys.executable)} -c "
                           "'import sys; sys.exit(\"no refresh token in the keyring\")'")
    with pytest.raises(LoginFailed, match="token_command exited with status 1: no refresh token"):
        failing.token()


def test_the_refresh_token_flow_keeps_the_rotated_token_and_warns_before_it_expires(
        dovecot: Dovecot, gateway: Gateway, token_endpoint: TokenEndpoint,
        monkeypatch) -> None:
    monkeypatch.setenv("TEST_REFRESH_TOKEN", "refresh-1")
    monkeypatch.setenv("TEST_CLIENT_SECRET", "client-secret")
    dovecot.introspection.tokens["good-token"] = "support"
    account = imap_account(dovecot, auth="xoauth2", password_env="",
                           oauth_token_url=token_endpoint.url, oauth_client_id="client-1",
                           oauth_client_secret_env="TEST_CLIENT_SECRET",
                           oauth_refresh_token_env="TEST_REFRESH_TOKEN")
    gateway.configure(account)
    gateway.start()
    dovecot.append(mail("<refresh@customer.test>", "Sent to a Gmail mailbox"))
    wait_for(lambda: "refresh@customer.test" in gateway.tickets())
    with gateway.runtime.sessions() as session:
        assert mailboxes.get_value(session, "imap.support.refresh_token") == "refresh-2"
    wait_for(lambda: "refresh token expires at" in gateway.state().status.get("warning", ""))
    gateway.stop()

    # a new process: the environment still holds refresh-1, which the provider no longer
    # takes; the rotated one from the database works
    settings_account = gateway.runtime.settings.imap[0]
    auth = authenticator(settings_account, gateway.runtime.sessions)
    connect(settings_account, auth).logout()
    assert [r["refresh_token"] for r in token_endpoint.requests] == ["refresh-1", "refresh-2"]
    assert "refresh token expires at" in auth.warning()

    token_endpoint.current = "revoked-by-an-admin"
    auth = authenticator(settings_account, gateway.runtime.sessions)
    with pytest.raises(LoginFailed, match="refused the refresh token: invalid_grant: token was"):
        connect(settings_account, auth)


@pytest.fixture
def tls_dovecot() -> Iterator[Dovecot]:
    with Dovecot.running(tls=True) as server:
        yield server


def test_tls_is_verified_against_a_private_ca(tls_dovecot: Dovecot, monkeypatch) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "secret")
    base = {**imap_account(tls_dovecot), "host": "localhost"}
    implicit = ImapAccount(**{**base, "port": tls_dovecot.tls_port, "tls": True,
                              "ca_file": tls_dovecot.ca_file})
    starttls = ImapAccount(**{**base, "starttls": True, "ca_file": tls_dovecot.ca_file})
    for account in (implicit, starttls):
        client = connect(account, authenticator(account, None))  # type: ignore[arg-type]
        assert client.folder_exists("INBOX")
        client.logout()

    unverified = ImapAccount(**{**base, "port": tls_dovecot.tls_port, "tls": True})
    with pytest.raises(AccountProblem, match=r"certificate of localhost:\d+ is not trusted "
                       r"\(unable to get local issuer certificate\); set ca_file"):
        connect(unverified, authenticator(unverified, None))  # type: ignore[arg-type]


def test_the_poller_waits_in_idle_over_implicit_tls(tls_dovecot: Dovecot,
                                                     sqlite_gateway: Gateway) -> None:
    """IDLE over TLS: the check for news that came with IDLE's go-ahead reads an SSL socket."""
    sqlite_gateway.configure(imap_account(tls_dovecot, host="localhost", tls=True,
                                          port=tls_dovecot.tls_port,
                                          ca_file=str(tls_dovecot.ca_file)))
    sqlite_gateway.start()
    wait_for(sqlite_gateway.connected)
    for n in (1, 2):
        tls_dovecot.append(mail(f"<tls-{n}@customer.test>", f"Over TLS {n}"))
        _, took = wait_for(lambda n=n: f"tls-{n}@customer.test" in sqlite_gateway.tickets())
        assert took < 2.0
    state = sqlite_gateway.state()
    assert state.status["mode"] == "idle" and state.last_error == "", state.last_error
