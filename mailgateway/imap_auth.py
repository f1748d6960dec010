"""IMAP logins: a password, or XOAUTH2 (Gmail, Microsoft 365) with an access token from
a command or from our own OAuth refresh-token exchange.

Google and Microsoft switched password logins off for most mailboxes; without XOAUTH2
a helpdesk cannot read them. A token is fetched again only when it is near expiry, so
a reconnect storm does not hammer the token endpoint.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sqlalchemy.orm import Session, sessionmaker

from mailgateway.config import ImapAccount, secret_from_env
from mailgateway.errors import ConfigError, MailgatewayError
from models import mailboxes
from models.schema import utcnow

log = logging.getLogger(__name__)

EXPIRY_MARGIN = 60  # seconds before an access token's end at which we fetch a new one
REFRESH_WARNING = timedelta(days=7)  # warn this long before a refresh token is known to end
COMMAND_TIMEOUT = 60
HTTP_TIMEOUT = 30


class AccountProblem(MailgatewayError):
    """Reconnecting will not cure it (wrong password, expired token, missing folder, an
    untrusted certificate): logged once, retried slowly, until an admin fixes it."""


class LoginFailed(AccountProblem):
    pass


class TokenSource(Protocol):
    def token(self) -> str: ...
    def forget(self) -> None: ...
    def warning(self) -> str: ...


@dataclass
class CachedToken:
    value: str = ""
    until: float = 0.0  # time.monotonic() after which it is stale

    def fresh(self, now: float) -> str:
        return self.value if self.value and now < self.until else ""

    def keep(self, value: str, expires_in: object, now: float) -> None:
        seconds = expires_in if isinstance(expires_in, int | float) else 0
        self.value, self.until = value, now + seconds - EXPIRY_MARGIN


class CommandToken:
    """`token_command`, as mutt and aerc have it: a command printing an access token. If it
    prints JSON with access_token and expires_in, the token is reused until near its end;
    a bare token is asked for again at every login."""

    def __init__(self, command: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.command, self.clock, self.cached = command, clock, CachedToken()

    def token(self) -> str:
        now = self.clock()
        if cached := self.cached.fresh(now):
            return cached
        try:
            done = subprocess.run(self.command, shell=True, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise LoginFailed(f"token_command gave no token within {COMMAND_TIMEOUT} s") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or [""])[-1]
            raise LoginFailed(f"token_command exited with status {done.returncode}: {said}")
        output = done.stdout.strip()
        try:
            data = json.loads(output)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("access_token"), str):
            self.cached.keep(data["access_token"], data.get("expires_in"), now)
            return data["access_token"]
        if not output:
            raise LoginFailed("token_command printed nothing")
        return output.splitlines()[0].strip()

    def forget(self) -> None:
        self.cached = CachedToken()

    def warning(self) -> str:
        return ""


class RefreshedToken:
    """The OAuth 2.0 refresh-token grant (RFC 6749 section 6) against the provider's token
    endpoint. Providers may rotate the refresh token; the new one is kept in the database,
    since the one in the environment stops working once it is replaced."""

    def __init__(self, account: ImapAccount, sessions: sessionmaker[Session],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account, self.sessions, self.clock = account, sessions, clock
        self.cached = CachedToken()
        self.key = f"imap.{account.name}.refresh_token"

    def token(self) -> str:
        now = self.clock()
        if cached := self.cached.fresh(now):
            return cached
        answer = self._exchange(self._refresh_token())
        self._keep_rotation(answer)
        self.cached.keep(answer["access_token"], answer.get("expires_in"), now)
        return answer["access_token"]

    def forget(self) -> None:
        self.cached = CachedToken()

    def warning(self) -> str:
        """Some providers say when the refresh token itself ends (refresh_token_expires_in):
        an admin must grant access again before then, or mail stops."""
        with self.sessions() as session:
            ends = mailboxes.get_value(session, f"{self.key}.expires_at")
        if ends and utcnow() + REFRESH_WARNING > datetime.fromisoformat(ends):
            return f"the OAuth refresh token expires at {ends} UTC; grant access again before"
        return ""

    def _refresh_token(self) -> str:
        with self.sessions() as session:
            stored = mailboxes.get_value(session, self.key)
        return stored or secret_from_env(
            self.account.oauth_refresh_token_env,
            f"[imap] oauth_refresh_token_env ({self.account.name})")

    def _exchange(self, refresh_token: str) -> dict:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": self.account.oauth_client_id}
        secret = secret_from_env(self.account.oauth_client_secret_env,
                                 f"[imap] oauth_client_secret_env ({self.account.name})")
        if secret:
            form["client_secret"] = secret
        request = urllib.request.Request(
            self.account.oauth_token_url, data=urllib.parse.urlencode(form).encode(),
            headers={"Accept": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise  # the provider's fault: an OSError, retried with backoff
            raise LoginFailed(f"the token endpoint refused the refresh token: "
                              f"{_oauth_error(error)}") from None
        except ValueError:
            raise LoginFailed("the token endpoint did not answer with JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise LoginFailed("the token endpoint's answer has no access_token")
        return answer

    def _keep_rotation(self, answer: dict) -> None:
        rotated = answer.get("refresh_token")
        lifetime = answer.get("refresh_token_expires_in")
        if not rotated and not isinstance(lifetime, int | float):
            return
        with self.sessions.begin() as session:
            if isinstance(rotated, str) and rotated:
                mailboxes.set_value(session, self.key, rotated)
                log.info("imap %s: stored the rotated OAuth refresh token", self.account.name)
            if isinstance(lifetime, int | float):
                ends = (utcnow() + timedelta(seconds=lifetime)).isoformat(timespec="seconds")
                mailboxes.set_value(session, f"{self.key}.expires_at", ends)


def _oauth_error(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
        return f"{body.get('error', error.code)}: {body.get('error_description', '')}".strip()
    except (ValueError, AttributeError, OSError):
        return f"HTTP {error.code}"


class Authenticator:
    """Logs a client in as the account says; remembers tokens between reconnects."""

    def __init__(self, account: ImapAccount, tokens: TokenSource | None) -> None:
        self.account, self.tokens = account, tokens

    def login(self, client: IMAPClient) -> None:
        user = self.account.user
        try:
            if self.tokens is None:
                client.login(user, self._password())
            else:
                client.oauth2_login(user, self.tokens.token())
        except LoginError as error:
            if self.tokens is not None:
                self.tokens.forget()  # perhaps revoked early: a fresh one next time
            raise LoginFailed(f"login as {user} refused: {_said(error)}") from None
        except ConfigError as error:
            raise LoginFailed(str(error)) from None

    def warning(self) -> str:
        return self.tokens.warning() if self.tokens is not None else ""

    def _password(self) -> str:
        what = f"[imap] password_env ({self.account.name})"
        if not self.account.password_env:
            raise ConfigError(f"{what}: empty; name the environment variable with the password")
        return secret_from_env(self.account.password_env, what)


def authenticator(account: ImapAccount, sessions: sessionmaker[Session]) -> Authenticator:
    if account.auth == "password":
        return Authenticator(account, None)
    if account.token_command:
        return Authenticator(account, CommandToken(account.token_command))
    return Authenticator(account, RefreshedToken(account, sessions))


def _said(error: Exception) -> str:
    """The server's words: imapclient hands them over as the repr of bytes."""
    text = str(error).strip()
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text)
    return (quoted.group(2) if quoted else text) or type(error).__name__
