"""The SMTP listener: refuse at RCPT, 250 only after the commit, 451 when we cannot store.

Sessions hand each message to a Batcher thread, which gathers what arrives within a
few milliseconds (or while the previous batch commits) into one receive_batch call: many
messages share one durable commit, each still answered only after that commit. Parsing
stays off the event loop, and by default in a process of its own (ingest_process.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mailgateway.config import SmtpSettings, secret_from_env
from mailgateway.errors import TemporaryFailure
from mailgateway.ingest import IngestResult, Source, receive_batch
from mailgateway.ingest_process import IngestProcess
from mailgateway.reply_token import base_address
from mailgateway.runtime import Runtime

log = logging.getLogger(__name__)
STOP = object()


Ingest = Callable[[Sequence[tuple[bytes, Source]]], list[IngestResult]]


class Batcher:
    """One thread that commits what the SMTP sessions hand it, in groups: whatever arrived
    while the last commit ran forms the next (group commit, no timer: a lone message goes at
    once; bench, 1 client: p50 14.5 -> 10.9 ms against a 2 ms wait). `stored` is
    called after a batch that queued outbound mail (acknowledgements, notices): when the
    commit happened in another process no session event tells the sender so. Only then:
    each wake costs the sender a write transaction, beside the ingest's."""

    def __init__(self, ingest: Ingest, max_batch: int, wait_ms: int,
                 stored: Callable[[], None] = lambda: None) -> None:
        self.ingest, self.max_batch, self.wait = ingest, max_batch, wait_ms / 1000
        self.stored = stored
        self.inbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="smtp-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.inbox.put(STOP)
        self.thread.join(timeout=30)

    def submit(self, data: bytes, source: Source) -> Future[IngestResult]:
        future: Future[IngestResult] = Future()
        self.inbox.put((data, source, future))
        return future

    def _run(self) -> None:
        while True:
            first = self.inbox.get()
            if first is STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.max_batch:
                try:
                    item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is STOP:
                    self.inbox.put(STOP)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        # Running from here on, so a client hanging up can no longer cancel its future and
        # make set_result raise, which would end this thread and leave every later DATA
        # unanswered. A future cancelled before this point drops its message: it was never
        # acknowledged, so the sender sends it again.
        batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            results = self.ingest([(data, source) for data, source, _ in batch])
        except TemporaryFailure as error:
            for *_, future in batch:
                future.set_exception(error)
            return
        except Exception as error:  # noqa: BLE001 -- edge: every waiting session gets its 451
            log.exception("ingest of %d messages failed", len(batch))
            for *_, future in batch:
                future.set_exception(TemporaryFailure(str(error)))
            return
        for (*_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        if any(r.mail_queued for r in results):
            self.stored()


@dataclass
class SmtpHandler:
    """aiosmtpd handler: the policy of the listener in three small methods. `ours`: every
    address of ours ([smtp] addresses, each queue's, the bounce address), accepted with or
    without a +tag (reply tokens, VERP) whatever [smtp] domains says."""

    settings: SmtpSettings
    batcher: Batcher
    ours: frozenset[str] = frozenset()

    def accepts(self, address: str) -> bool:
        domains = {d.lower() for d in self.settings.domains}
        return (address.lower().rpartition("@")[2] in domains or address.lower() in self.ours
                or base_address(address) in self.ours)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        if not self.accepts(address):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
        data = envelope.original_content or b""
        if len(data) > self.settings.max_message_size:
            return "552 5.3.4 Message too big"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        kind = "lmtp" if isinstance(server, LMTP) else "smtp"
        source = Source(kind, peer, tuple(envelope.rcpt_tos))
        try:
            result = await asyncio.wrap_future(self.batcher.submit(data, source))
        except TemporaryFailure as error:
            log.warning("451 to %s: %s", peer, error)
            return "451 4.3.0 Temporary failure, please try again later"
        return f"250 2.0.0 {result.action} (ticket {result.ticket}, receipt {result.raw_id})"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session failed", exc_info=error)
        return "451 4.3.0 Internal error"


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _authenticator(settings: SmtpSettings):  # type: ignore[no-untyped-def]
    user = settings.auth_user.encode()
    password = secret_from_env(settings.auth_password_env, "[smtp] auth_password_env").encode()

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:  # type: ignore[no-untyped-def]
        """Bytes compared as bytes: credentials that are not UTF-8 are wrong (535), not our
        fault (451); and in constant time, so the answer's timing gives nothing away."""
        ok = (isinstance(auth_data, LoginPassword)
              and hmac.compare_digest(auth_data.login, user)
              & hmac.compare_digest(auth_data.password, password))
        return AuthResult(success=ok, handled=False)

    return authenticate


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LongLines:
    """Lines as long as the size limit allows, not RFC 5321's 1,000 octets: mailers that do
    not wrap (Exim does not) would get a permanent 500 for a mail the pipe and IMAP take."""

    def __init__(self, *args, line_length_limit: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.line_length_limit = line_length_limit  # read by SMTP.__init__ for its reader
        super().__init__(*args, **kwargs)


class GatewaySmtp(LongLines, SMTP):
    """aiosmtpd's SMTP with long lines."""


class GatewayLmtp(LongLines, LMTP):
    """LMTP for an MTA that delivers locally (Postfix lmtp:, Exim's lmtp transport). RFC 2033
    4.2: after the final dot, one reply per accepted recipient, whoever answers: our handler,
    or aiosmtpd itself (552 too much data, 500 line too long, 451 from handle_exception)."""

    _replies = 0  # owed by the one reply that ends a DATA (set at its 354)

    async def push(self, status: str) -> None:  # type: ignore[override]
        if status.startswith("354") and self.envelope:
            self._replies = len(self.envelope.rcpt_tos)
        elif self._replies:
            status, self._replies = "\r\n".join([status] * self._replies), 0
        await super().push(status)


class GatewayController(Controller):
    """The listener's protocol (SMTP or LMTP), with long lines allowed."""

    def __init__(self, handler: SmtpHandler, *, lmtp: bool, line_length_limit: int,
                 **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.protocol = GatewayLmtp if lmtp else GatewaySmtp
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return self.protocol(self.handler, line_length_limit=self.line_length_limit,
                             **self.SMTP_kwargs)


class SmtpListener:
    """The listener, its batcher and the ingest worker, started and stopped together."""

    def __init__(self, runtime: Runtime, *, wake_sender: Callable[[], None] = lambda: None
                 ) -> None:
        settings = runtime.settings.smtp
        self.worker = IngestProcess(runtime) if settings.ingest_process else None
        ingest = self.worker.receive_batch if self.worker else partial(receive_batch, runtime)
        self.batcher = Batcher(ingest, settings.batch_size, settings.batch_wait_ms,
                               stored=wake_sender)
        self.handler = SmtpHandler(settings, self.batcher, runtime.settings.our_addresses)
        tls = _tls_context(settings)
        options: dict = {"data_size_limit": settings.max_message_size, "enable_SMTPUTF8": True,
                         "ident": "mailgateway"}
        if tls:
            options.update(tls_context=tls, require_starttls=settings.require_tls)
        if settings.auth_user:
            options.update(authenticator=_authenticator(settings), auth_required=True,
                           auth_require_tls=tls is not None)
        self.port = settings.port or free_port(settings.host)
        self.controller = GatewayController(
            self.handler, lmtp=settings.lmtp, line_length_limit=settings.max_message_size + 2,
            hostname=settings.host, port=self.port, **options)

    def start(self) -> None:
        if self.worker:
            self.worker.start()
        self.batcher.start()
        self.controller.start()
        log.info("SMTP listener on %s:%s", self.controller.hostname, self.port)

    def stop(self) -> None:
        self.controller.stop()
        self.batcher.stop()
        if self.worker:
            self.worker.stop()
