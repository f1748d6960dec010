"""The one place that sends mail: claim due outbox rows, compose, hand to the relay, mark.

No database transaction is open while the relay talks: a row is claimed under a lease in
one commit, sent, and marked in another (see models/outbox.py for what that guarantees).
Failures are sorted once, here: 4xx, network trouble and timeouts retry with backoff;
a 5xx fails the mail with the relay's answer; a relay that refuses our login or TLS is
our configuration, not the mail, so that retries too.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.policy import default as default_policy
from pathlib import Path
from typing import Protocol

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from mailgateway.compose import Composed, ComposeError, compose, mail_templates
from mailgateway.config import OutboundSettings, secret_from_env
from mailgateway.runtime import Runtime
from models import outbox
from models.outbox import Claim
from models.schema import Message, utcnow
from models.store import sync_directory

log = logging.getLogger(__name__)

AUTH_CODES = frozenset({530, 534, 535, 538})  # the relay wants other credentials: our config


class DeliveryError(Exception):
    """The relay did not take the mail; permanent means a retry would get the same answer."""

    def __init__(self, text: str, *, permanent: bool) -> None:
        super().__init__(text)
        self.permanent = permanent


Send = Callable[[Composed], str]  # returns a note (recipients the relay refused), or ""


class Transport(Protocol):
    def session(self) -> AbstractContextManager[Send]: ...


@dataclass
class SmtpTransport:
    """A relay over SMTP: STARTTLS or implicit TLS (certificate and host name verified,
    optionally against a private CA), AUTH when a user is set, one connection per batch."""

    settings: OutboundSettings
    password: str = field(default="", repr=False)

    @contextmanager
    def session(self) -> Iterator[Send]:
        connection: smtplib.SMTP | None = None

        def send(mail: Composed) -> str:
            nonlocal connection
            if connection is None:
                connection = self._connect()
            try:
                refused = connection.send_message(mail.message, from_addr=mail.envelope_from,
                                                  to_addrs=mail.recipients)
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as error:
                raise classify_smtp_error(error) from None  # smtplib sent RSET: still usable
            except OSError as error:  # smtplib.SMTPException is an OSError too
                connection = _close(connection)
                raise DeliveryError(f"relay: {error}", permanent=False) from None
            return "; ".join(f"refused {rcpt}: {code} {_text(reply)}"
                             for rcpt, (code, reply) in refused.items())

        try:
            yield send
        finally:
            if connection is not None:
                try:
                    connection.quit()
                except (smtplib.SMTPException, OSError):
                    connection.close()

    def _connect(self) -> smtplib.SMTP:
        """Whatever goes wrong before MAIL FROM is about the relay, never the mail: retry."""
        try:
            return self._open()
        except OSError as error:  # refused, timeout, TLS, greeting or AUTH refused
            raise DeliveryError(f"relay {self.settings.host}:{self.settings.port}: {error}",
                                permanent=False) from None

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.tls == "implicit":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                        context=context)
        else:
            connection = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            connection.ehlo()
            if s.tls == "starttls":
                connection.starttls(context=context)
                connection.ehlo()
            if s.user:
                connection.login(s.user, self.password)
        except BaseException:
            connection.close()
            raise
        return connection


def classify_smtp_error(
    error: smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused,
) -> DeliveryError:
    """5xx -> permanent with the relay's words; 4xx, auth and protocol trouble -> retry."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        answers = error.recipients.values()
        text = "; ".join(f"{rcpt}: {code} {_text(reply)}"
                         for rcpt, (code, reply) in error.recipients.items())
        return DeliveryError(text, permanent=all(500 <= code < 600 for code, _ in answers))
    text = f"{error.smtp_code} {_text(error.smtp_error)}"
    permanent = 500 <= error.smtp_code < 600 and error.smtp_code not in AUTH_CODES
    return DeliveryError(text, permanent=permanent)


@dataclass
class DirectoryTransport:
    """Each mail as an .eml file under [outbound] path, written whole or not at all: for
    trying the product out and for looking at what would have been sent."""

    path: Path

    @contextmanager
    def session(self) -> Iterator[Send]:
        self.path.mkdir(parents=True, exist_ok=True)
        yield self._write

    def _write(self, mail: Composed) -> str:
        outbox_id = mail.envelope_from.partition("+b")[2].partition("-")[0] or "0"
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{outbox_id}.eml"
        data = (f"Return-Path: <{mail.envelope_from}>\n".encode()
                + mail.message.as_bytes(policy=default_policy))
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path / name)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {self.path / name}: {error}",
                                permanent=False) from None
        sync_directory(self.path)
        return ""


def make_transport(settings: OutboundSettings) -> Transport:
    if settings.transport == "directory":
        return DirectoryTransport(settings.path)
    password = secret_from_env(settings.password_env, "[outbound] password_env")
    return SmtpTransport(settings, password)


@dataclass
class Sweep:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0  # another sender took the row over after our lease ran out


class Sender:
    """Sends what is due whenever woken (after a commit that queued mail, and by the
    scheduler's periodic sweep), in one background thread."""

    def __init__(self, runtime: Runtime, *, transport: Transport | None = None,
                 batch: int = 20) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.transport = transport or make_transport(runtime.settings.outbound)
        self.templates = mail_templates()
        self.reads = runtime.reads
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Called after a commit that queued mail: it leaves now, not at the next sweep."""
        self._wake.set()

    def send_due(self, *, now: datetime | None = None) -> Sweep:
        """Everything due now, batch after batch, until nothing is left."""
        sweep = Sweep()
        lease = self.settings.outbound.lease
        while True:
            with self.runtime.sessions.begin() as session:
                claims = outbox.claim_due(session, lease_seconds=lease, limit=self.batch, now=now)
            if not claims:
                return sweep
            mails = self._compose(claims)
            with self.transport.session() as send:
                for claim in claims:
                    self._deliver(claim, mails.get(claim.outbox_id), send, now, sweep)

    def _deliver(self, claim: Claim, mail: Composed | ComposeError | None, send: Send,
                 now: datetime | None, sweep: Sweep) -> None:
        if isinstance(mail, ComposeError):
            self._finish(claim, sweep, DeliveryError(str(mail), permanent=True), now)
            return
        if mail is None:
            sweep.lost += 1
            return
        try:
            note = send(mail)
        except DeliveryError as error:
            self._finish(claim, sweep, error, now)
            return
        with self.runtime.sessions.begin() as session:
            marked = outbox.mark_sent(session, claim, note=note, now=now)
        if marked:
            sweep.sent += 1
            log.info("sent outbox %s %s to %s", claim.outbox_id, mail.message["Message-ID"],
                     ", ".join(mail.recipients))
        else:
            sweep.lost += 1
            log.warning("outbox %s sent, but its lease had run out meanwhile", claim.outbox_id)

    def _compose(self, claims: list[Claim]) -> dict[int, Composed | ComposeError]:
        """The batch's mails, from one read of its rows and their stored messages (no write
        lock while attachments are read); a row whose lease was lost is left out."""
        mails: dict[int, Composed | ComposeError] = {}
        with self.reads() as session:
            rows = outbox.held_rows(session, claims)
            bodies = {m.id: m for m in session.scalars(
                select(Message).options(selectinload(Message.attachments))
                .where(Message.id.in_({r.message_row_id for r in rows.values()
                                       if r.message_row_id})))}
            for outbox_id, row in rows.items():
                try:
                    mails[outbox_id] = compose(
                        row, bodies.get(row.message_row_id), settings=self.settings,
                        store=self.runtime.store, templates=self.templates)
                except ComposeError as error:
                    mails[outbox_id] = error
        return mails

    def _finish(self, claim: Claim, sweep: Sweep, error: DeliveryError,
                now: datetime | None) -> None:
        out = self.settings.outbound
        with self.runtime.sessions.begin() as session:
            if error.permanent:
                outbox.mark_failed(session, claim, str(error))
                state = "failed"
            else:
                state = outbox.mark_retry(session, claim, str(error), now=now,
                                          retry_delay=out.retry_delay,
                                          max_attempts=out.max_attempts) or "lost"
        if state == "failed":
            sweep.failed += 1
        else:
            sweep.retried += 1
        log.warning("outbox %s not sent (%s): %s", claim.outbox_id, state, error)

    def _after_commit(self, session: Session) -> None:
        """SQLAlchemy calls this for a savepoint's release too: only the real commit counts,
        or the sender looks before the rows are visible and then sleeps past them."""
        if session.in_nested_transaction():
            return
        if session.info.pop(outbox.QUEUED_FLAG, False):
            self.wake()

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(outbox.QUEUED_FLAG, None)

    def start(self) -> None:
        """The thread, and a listener on every session of this process: any commit that
        queued mail (ingest, web UI, CLI) wakes the sender, no caller has to remember to."""
        event.listen(self.runtime.sessions, "after_commit", self._after_commit)
        event.listen(self.runtime.sessions, "after_rollback", self._after_rollback)
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self._thread.start()
        self.wake()  # whatever was queued while we were down

    def stop(self) -> None:
        if event.contains(self.runtime.sessions, "after_commit", self._after_commit):
            event.remove(self.runtime.sessions, "after_commit", self._after_commit)
            event.remove(self.runtime.sessions, "after_rollback", self._after_rollback)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.outbound.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.send_due()
            except OperationalError as error:  # database away: the next wake tries again
                log.warning("outbox sweep: database unavailable: %s", error)
            except Exception:  # noqa: BLE001 -- edge: the thread must outlive one bad sweep
                log.exception("outbox sweep failed")


def _close(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        connection.close()


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())
