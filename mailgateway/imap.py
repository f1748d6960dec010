"""IMAP mailboxes: one poller thread per enabled [[imap]] account, so a broken account
never stops the others.

Each round fetches by UID what lies above the last UID taken (kept with UIDVALIDITY in
the database; never by \\Seen, which a person reading the mailbox sets too), hands each
message to ingest.receive, and only after that returned (committed) flags it \\Seen and
moves it to the processed folder. A crash in between re-fetches the message, which the
ingest dedup stores once. Between rounds it waits in IDLE (a new message becomes a ticket
within about a second) or, without IDLE, for poll_interval.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from imapclient import IMAPClient
from sqlalchemy.exc import SQLAlchemyError

from mailgateway.config import ImapAccount
from mailgateway.errors import TemporaryFailure
from mailgateway.imap_auth import AccountProblem, authenticator
from mailgateway.imap_client import (
    TRANSIENT,
    acknowledge,
    announced_arrivals,
    check_folder,
    connected,
    describe,
    open_folder,
    start_idle,
    uids_after,
)
from mailgateway.imap_lock import AccountLock
from mailgateway.ingest import IngestResult, Source, receive
from mailgateway.runtime import Runtime
from mailgateway.service import Service
from models import mailboxes

log = logging.getLogger(__name__)

Receive = Callable[[bytes, Source], IngestResult]
MAX_FETCH_TRIES = 3  # a message the server fails to hand over this often is skipped
STOP_TIMEOUT = 15  # seconds for all pollers together; one stuck in a network call is left


@dataclass(frozen=True)
class Timing:
    """How long to wait, in seconds. Tests shorten them; the defaults suit production."""

    first_retry: float = 1.0  # after a network fault; doubles per fault, with jitter
    max_retry: float = 300.0
    problem_retry: float = 300.0  # after a wrong password, expired token, missing folder
    lock_retry: float = 3.0  # another process polls the account: try its lock this often
    lock_check: float = 10.0  # while polling: is our lock's database session still alive?
    idle_check: float = 1.0  # IDLE wakes this often to notice a stop


class Poller:
    def __init__(self, runtime: Runtime, account: ImapAccount, receive: Receive,
                 stop: threading.Event, timing: Timing = Timing()) -> None:
        self.runtime, self.account, self.receive = runtime, account, receive
        self.stop, self.timing = stop, timing
        self.auth = authenticator(account, runtime.sessions)
        self.lock = AccountLock(runtime.engine, account.name)
        self.failures = 0
        self.strikes: dict[int, int] = {}  # UID -> failed fetches in a row
        self.reported = ""  # the last fault logged: the same one again is not logged again
        self.standing_by = False
        self.warned = ""

    @property
    def name(self) -> str:
        return self.account.name

    def run(self) -> None:
        """The thread: take the account's lock, then serve until stopped; every fault
        ends in a wait and another try, never in the end of the thread."""
        try:
            while not self.stop.is_set():
                self._serve_once()
        finally:
            self.lock.release()

    def _serve_once(self) -> None:
        try:
            if self._take_lock():
                self._serve()
            else:
                self.stop.wait(self.timing.lock_retry)
        except AccountProblem as error:
            self._failed(error, logging.ERROR)
            self.stop.wait(self.timing.problem_retry)
        except (*TRANSIENT, TemporaryFailure, SQLAlchemyError) as error:
            self.failures += 1
            delay = self._backoff()
            self._failed(error, logging.WARNING, f"; retrying in {delay:.1f} s")
            self.stop.wait(delay)
        except Exception as error:  # noqa: BLE001 -- edge: a bug must not end the poller
            log.exception("imap %s: unexpected failure", self.name)
            self.failures += 1
            self._failed(error, logging.DEBUG)
            self.stop.wait(self._backoff())

    def _take_lock(self) -> bool:
        if self.lock.acquire():
            if self.standing_by:
                log.info("imap %s: took over polling from another process", self.name)
            self.standing_by = False
            return True
        if not self.standing_by:
            log.info("imap %s: another process polls this account; standing by", self.name)
        self.standing_by = True
        return False

    def _backoff(self) -> float:
        """Exponential, with jitter so that many accounts do not reconnect in step."""
        delay = min(self.timing.max_retry, self.timing.first_retry * 2 ** (self.failures - 1))
        return delay * random.uniform(0.5, 1.0)

    def _serve(self) -> None:
        account = self.account
        with connected(account, self.auth) as client:
            folder = open_folder(client, account.folder)
            if account.processed_folder:
                check_folder(client, account.processed_folder)
            idle = account.idle and client.has_capability("IDLE")
            self._note_connected(client, folder.uidvalidity, folder.exists, idle)
            try:
                while not self.stop.is_set() and self.lock.held():
                    self._sync(client, folder.uidvalidity)
                    if idle:
                        self._idle(client)
                    else:
                        self._wait(account.poll_interval)
            finally:
                self._write(mailboxes.record_connected, False)

    def _sync(self, client: IMAPClient, uidvalidity: int) -> None:
        """Take every message above the last UID taken, oldest first."""
        with self.runtime.sessions.begin() as session:
            state = mailboxes.folder_state(session, self.name, self.account.folder)
            previous = state.uidvalidity
            last_uid = mailboxes.resynchronise(session, state, uidvalidity)
        if previous is not None and previous != uidvalidity:
            self.strikes.clear()
            log.warning("imap %s: UIDVALIDITY of %s changed from %s to %s; taking the folder "
                        "again (already stored messages are recognised)",
                        self.name, self.account.folder, previous, uidvalidity)
        client.noop()  # lets the server announce what arrived since our last command
        while not self.stop.is_set():
            announced_arrivals(client)
            uids = uids_after(client, last_uid)
            for uid in uids:
                if self.stop.is_set():
                    return
                data = self._fetch(client, uid)
                if data is not None:
                    self._take(client, uid, data)
                last_uid = uid
            if not uids and not announced_arrivals(client):
                break
        self._write(mailboxes.record_success, warning=self._token_warning())
        self.failures = 0
        if self.reported:
            log.info("imap %s: working again", self.name)
            self.reported = ""

    def _fetch(self, client: IMAPClient, uid: int) -> bytes | None:
        """The message's bytes; None when it is gone (expunged meanwhile) or unreadable.

        A message the server fails to deliver time after time (a damaged file, a server
        bug) would otherwise block every message after it: after MAX_FETCH_TRIES it is
        skipped, logged and listed in the status for an admin."""
        if self.strikes.get(uid, 0) >= MAX_FETCH_TRIES:
            return None
        try:
            fetched = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {})
        except TRANSIENT as error:
            self.strikes[uid] = self.strikes.get(uid, 0) + 1
            if self.strikes[uid] == MAX_FETCH_TRIES:
                log.error("imap %s: UID %s of %s could not be fetched %s times (%s); skipping "
                          "it, it stays in the folder", self.name, uid, self.account.folder,
                          MAX_FETCH_TRIES, describe(error, self.account))
                self._write(mailboxes.record_unreadable, uid)
            raise
        self.strikes.pop(uid, None)
        return fetched.get(b"BODY[]")

    def _take(self, client: IMAPClient, uid: int, data: bytes) -> None:
        result = self.receive(data, Source(kind="imap", detail=self.name))
        acknowledge(client, [uid], self.account.processed_folder)
        self._write(mailboxes.record_taken, uid)
        log.info("imap %s: UID %s %s: ticket %s, Message-ID %s", self.name, uid,
                 result.action, result.ticket, result.message_id)

    def _idle(self, client: IMAPClient) -> None:
        """IDLE until news, a stop, or idle_timeout (RFC 2177: re-issue before the server's
        30 minutes run out). Dovecot batches its news for half a second."""
        news = start_idle(client)
        ends = time.monotonic() + self.account.idle_timeout
        check_lock = time.monotonic() + self.timing.lock_check
        while not news and not self.stop.is_set() and time.monotonic() < ends:
            news = _arrivals(client.idle_check(timeout=self.timing.idle_check))
            if time.monotonic() > check_lock:
                check_lock = time.monotonic() + self.timing.lock_check
                if not self.lock.held():
                    break
        _arrivals(client.idle_done()[1])

    def _wait(self, seconds: float) -> None:
        """Sleep between polls, waking for a stop or a lost lock."""
        ends = time.monotonic() + seconds
        while not self.stop.is_set() and (left := ends - time.monotonic()) > 0:
            self.stop.wait(min(left, self.timing.lock_check))
            if not self.lock.held():
                return

    def _note_connected(self, client: IMAPClient, uidvalidity: int, exists: int,
                        idle: bool) -> None:
        capabilities = sorted(c.decode() for c in client.capabilities())
        self._write(mailboxes.record_connected, True, capabilities=capabilities,
                    mode="idle" if idle else "poll", folder_messages=exists,
                    holder=f"{socket.gethostname()}:{os.getpid()}")
        log.info("imap %s: connected to %s:%s as %s; %s holds %s messages (UIDVALIDITY %s); %s",
                 self.name, self.account.host, self.account.port, self.account.user,
                 self.account.folder, exists, uidvalidity,
                 "waiting in IDLE" if idle else f"polling every {self.account.poll_interval} s")

    def _token_warning(self) -> str:
        warning = self.auth.warning()
        if warning and warning != self.warned:
            log.warning("imap %s: %s", self.name, warning)
        self.warned = warning
        return warning

    def _failed(self, error: BaseException, level: int, retry: str = "") -> None:
        """Log a fault once, not at every retry; the status always has the latest."""
        text = describe(error, self.account)
        if text != self.reported:
            log.log(level, "imap %s: %s%s", self.name, text, retry)
        else:
            log.debug("imap %s: still failing: %s%s", self.name, text, retry)
        self.reported = text
        self._write(mailboxes.record_error, text)

    def _write(self, operation: Callable[..., None], *args: object, **facts: object) -> None:
        """Bookkeeping on this account's row, in its own transaction."""
        try:
            with self.runtime.sessions.begin() as session:
                state = mailboxes.folder_state(session, self.name, self.account.folder)
                operation(session, state, *args, **facts)
        except SQLAlchemyError:
            if operation is mailboxes.record_taken:
                raise  # the round must stop: its progress was not kept
            log.warning("imap %s: could not record the account's status", self.name)


def _arrivals(responses: list[tuple]) -> bool:
    """New messages announced in IDLE; the server saying BYE ends the connection."""
    for response in responses:
        if response[0] == b"BYE":
            said = b" ".join(p for p in response[1:] if isinstance(p, bytes))
            raise ConnectionResetError(f"the server said BYE: {said.decode(errors='replace')}")
    return any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


def imap_service(runtime: Runtime, receive_message: Receive | None = None,
                 timing: Timing = Timing()) -> Service:
    """One poller thread per enabled account, stopped together (IDLE wakes within a second)."""
    stop = threading.Event()
    receive_message = receive_message or functools.partial(receive, runtime)
    pollers = [Poller(runtime, account, receive_message, stop, timing)
               for account in runtime.settings.imap if account.enabled]
    threads = [threading.Thread(target=p.run, name=f"imap-{p.name}", daemon=True)
               for p in pollers]

    def start() -> None:
        for thread in threads:
            thread.start()
        log.info("imap: %s", ", ".join(p.name for p in pollers) or "no enabled accounts")

    def stop_all() -> None:
        stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    return Service("imap", start, stop_all)
