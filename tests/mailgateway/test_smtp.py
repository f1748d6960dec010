"""The SMTP listener over real loopback SMTP, on SQLite and PostgreSQL: smtplib and swaks
deliver to `mailgateway run` or to the listener in this process, and what got a 250 is
looked up in the database or with `mailgateway ticket show --json`."""

from __future__ import annotations

import base64
import email
import logging
import os
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, select, text

from mailgateway.jobs import SWEEP_SECONDS
from models.schema import RawMail, RawState
from tests.mailgateway.smtp_gateway import (
    HOST,
    Gateway,
    deliver,
    gateway_in_process,
    gateway_process,
    mail,
    send,
    wait_until,
)

TICKET = re.compile(r"ticket (\d+)")
SWAKS = shutil.which("swaks")


def swaks(port: int, data: bytes, folder: Path, *options: str) -> str:
    """swaks delivering the file; its transcript (server lines start with '<-' or '<~')."""
    assert SWAKS, "swaks is missing: `make test` installs it"
    message = folder / f"{uuid.uuid4().hex}.eml"
    message.write_bytes(data)
    done = subprocess.run(
        [SWAKS, "--server", f"{HOST}:{port}", "--from", "ann@customer.test",
         "--to", "support@example.com",
         "--data", str(message), "--timeout", "30", *options],
        capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def data_answer(transcript: str) -> str:
    """The server's answer to the message body: the line after the lone '.'."""
    lines = transcript.splitlines()
    dot = max(i for i, line in enumerate(lines) if line.strip() in ("-> .", "~> ."))
    return lines[dot + 1].lstrip("<-~* ").strip()


# -- a conversation over SMTP ------------------------------------------------------------

@pytest.mark.parametrize("client", ["smtplib", "swaks"])
def test_first_mail_opens_a_ticket_and_the_reply_threads_onto_it(
        client: str, tmp_path: Path, database_url: str) -> None:
    first = mail("Ann Customer <ann@customer.test>", "Printer on fire",
                 message_id="<first@customer.test>")
    reply = mail("Ann Customer <ann@customer.test>", "Re: Printer on fire",
                 "It is still burning.\n\n"
                 "On Mon, 2 Mar 2026 at 10:15, Support <support@example.com> wrote:\n"
                 "> We are on it.\n",
                 message_id="<second@customer.test>", in_reply_to="<first@customer.test>")
    with gateway_process(tmp_path, database_url) as gateway:
        if client == "smtplib":
            answers = [send(gateway.port, first), send(gateway.port, reply)]
        else:
            answers = [(int(line[:3]), line) for line in (
                data_answer(swaks(gateway.port, data, tmp_path)) for data in (first, reply))]
        (first_code, first_text), (reply_code, reply_text) = answers
        assert (first_code, reply_code) == (250, 250), answers
        opened = int(TICKET.search(first_text).group(1))  # the 250 names the ticket
        assert "created" in first_text
        assert "appended" in reply_text and f"ticket {opened}" in reply_text

        shown = gateway.ticket(opened)
    assert shown["requester"] == "ann@customer.test" and shown["subject"] == "Printer on fire"
    inbound = [m for m in shown["messages"] if m["direction"] == "inbound"]  # + our ack
    assert [(m["message_id"], m["threaded_by"]) for m in inbound] == [
        ("<first@customer.test>", "new"), ("<second@customer.test>", "in-reply-to")]
    assert inbound[1]["reply_text"].strip() == "It is still burning."


def test_the_acknowledgement_leaves_at_once_although_a_worker_process_stored_the_mail(
        tmp_path: Path, database_url: str) -> None:
    """The ingest worker commits in its own process, where no session event reaches the
    sender: the listener wakes it for a batch that queued mail, so the acknowledgement
    leaves now, not at the next outbox sweep."""
    sent = tmp_path / "sent"
    with gateway_process(tmp_path, database_url,
                         outbound={"transport": "directory", "path": str(sent)}) as gateway:
        started = time.monotonic()
        code, text = send(gateway.port, mail("Ann Customer <ann@customer.test>", "Printer on fire"))
        assert code == 250 and "created" in text
        wait_until(lambda: list(sent.glob("*.eml")), "the acknowledgement",
                   timeout=SWEEP_SECONDS - 3)
        assert time.monotonic() - started < SWEEP_SECONDS
    [ack] = [email.message_from_bytes(p.read_bytes()) for p in sent.glob("*.eml")]
    assert ack["Auto-Submitted"] == "auto-replied" and "ann@customer.test" in ack["To"]


# -- who and what is accepted -------------------------------------------------------------

@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    """The listener in this process: example.com, one exact address elsewhere, 4 KB at most."""
    with gateway_in_process(tmp_path, database_url, smtp={
            "domains": ["example.com"], "addresses": ["help@partner.test"],
            "max_message_size": 4096}) as started:
        yield started


def test_a_foreign_recipient_is_refused_with_550_before_data_and_nothing_is_stored(
        gateway: Gateway) -> None:
    with smtplib.SMTP(HOST, gateway.port, timeout=30) as client:
        client.ehlo()
        assert client.mail("ann@customer.test")[0] == 250
        for foreign in ("support@evil.test", "someone@partner.test",
                        "support@example.com.evil.test"):
            code, text = client.rcpt(foreign)
            assert (code, text[:5]) == (550, b"5.1.1"), foreign
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.data(mail("ann@customer.test", "nobody to give it to"))
        assert refused.value.smtp_code == 503  # no recipient: DATA is not even started
    assert gateway.counts() == (0, 0)


@pytest.mark.parametrize("recipient", ["help@partner.test", "Help@Partner.Test",
                                       "help+billing@partner.test", "support+t123@example.com",
                                       "anyone@example.com"])
def test_configured_addresses_domains_and_plus_addresses_are_accepted(
        gateway: Gateway, recipient: str) -> None:
    message_id = f"<{uuid.uuid4().hex}@customer.test>"
    code, text = send(gateway.port, mail("ann@customer.test", "hi", to=recipient,
                                         message_id=message_id), recipients=(recipient,))
    assert code == 250 and TICKET.search(text), text
    assert gateway.copies(message_id) == 1


@pytest.fixture
def elsewhere(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    """A queue and the bounce address at domains that [smtp] domains does not name."""
    with gateway_in_process(tmp_path, database_url, smtp={"domains": ["example.com"]},
                            queues=[{"name": "Support", "address": "support@example.com",
                                     "default": True},
                                    {"name": "Billing", "address": "billing@example.org"}],
                            outbound={"bounce_address": "bounces@mail.example.net"}) as started:
        yield started


@pytest.mark.parametrize("recipient", ["billing@example.org", "billing+t1-abcdef@example.org",
                                       "bounces+b7-abcdef@mail.example.net"])
def test_our_queue_and_bounce_addresses_are_ours_whatever_the_domains(
        elsewhere: Gateway, recipient: str) -> None:
    """Found by QA: mail to a queue (and to its reply tokens, and the VERP bounces of our
    mail) got 550 when the queue's domain was not among [smtp] domains."""
    with smtplib.SMTP(HOST, elsewhere.port, timeout=30) as client:
        client.ehlo()
        assert client.mail("ann@customer.test")[0] == 250
        assert client.rcpt(recipient)[0] == 250
        assert client.rcpt("someone@example.org")[0] == 550  # the domain itself is not ours


def test_a_line_longer_than_rfc_5321_allows_is_taken(gateway: Gateway) -> None:
    """Found by QA: a 1,500-byte line (Exim does not wrap) got a permanent 500, a mail the
    pipe and IMAP take. Only the size limit counts."""
    data = (b"From: ann@customer.test\r\nTo: support@example.com\r\nSubject: long line\r\n"
            b"Message-ID: <long-line@customer.test>\r\n\r\n" + b"x" * 1500 + b"\r\n")
    code, text = send(gateway.port, data)
    assert code == 250 and TICKET.search(text), text
    assert gateway.copies("<long-line@customer.test>") == 1


def test_one_refused_recipient_does_not_stop_the_others(gateway: Gateway) -> None:
    with smtplib.SMTP(HOST, gateway.port, timeout=30) as client:
        refused = client.sendmail("ann@customer.test", ["x@evil.test", "support@example.com"],
                                  mail("ann@customer.test", "two recipients",
                                       message_id="<two@customer.test>"))
    assert list(refused) == ["x@evil.test"] and refused["x@evil.test"][0] == 550
    assert gateway.copies("<two@customer.test>") == 1


def test_a_message_over_max_message_size_gets_552_and_is_not_stored(gateway: Gateway) -> None:
    big = mail("ann@customer.test", "logs", ("x" * 80 + "\n") * 100)
    assert len(big) > 4096
    with smtplib.SMTP(HOST, gateway.port, timeout=30) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "4096"
        # announced with SIZE=: refused at MAIL, before a byte is sent
        code, _ = client.mail("ann@customer.test", [f"SIZE={len(big)}"])
        assert code == 552
        client.rset()
        # not announced: refused at the end of DATA
        assert deliver(client, "ann@customer.test", ["support@example.com"], big)[0] == 552
        # the session goes on: a small message after it is taken
        small = mail("ann@customer.test", "small one", message_id="<small@customer.test>")
        assert deliver(client, "ann@customer.test", ["support@example.com"], small)[0] == 250
    assert gateway.counts() == (1, 1)


@contextmanager
def commits_held(gateway: Gateway) -> Iterator[None]:
    """Another program holds the write lock for a moment: our commits wait for it."""
    url = gateway.runtime.engine.url
    with admin(url) as connection:
        if url.get_backend_name() == "sqlite":
            connection.execute("BEGIN EXCLUSIVE")
            yield
            connection.rollback()
            return
        connection.execute(text("BEGIN"))
        connection.execute(text(f"LOCK TABLE {schema_of(url)}.raw_mail IN EXCLUSIVE MODE"))
        yield
        connection.execute(text("ROLLBACK"))


def test_a_client_hanging_up_during_the_commit_leaves_the_listener_answering(
        gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """Regression: the hang-up cancelled the session's future, the batcher's set_result on
    it raised InvalidStateError and killed the batcher thread, and from then on every DATA
    waited forever: the gateway still accepted connections but never answered again.
    Now the message is committed, the sender's retry is answered as a duplicate of it,
    and the next message is taken as usual."""
    caplog.set_level(logging.INFO, logger="mail.log")
    data = mail("ann@customer.test", "hung up", message_id="<hangup@customer.test>")
    store = gateway.runtime.settings.storage.path
    with commits_held(gateway), socket.create_connection((HOST, gateway.port)) as raw:
        replies = raw.makefile("rb")
        for command in (None, b"EHLO mta.test", b"MAIL FROM:<ann@customer.test>",
                        b"RCPT TO:<support@example.com>", b"DATA"):
            if command:
                raw.sendall(command + b"\r\n")
            while (line := replies.readline())[3:4] == b"-":
                pass
            assert line[:1] in (b"2", b"3"), line
        raw.sendall(data + b".\r\n")
        wait_until(lambda: any(p.is_file() for p in store.rglob("*")),
                   "the batcher took the message and waits for the lock")
        replies.close()
        raw.close()  # hang up without reading the answer
        wait_until(lambda: "EOF received" in caplog.text, "the listener saw the hang-up")
    wait_until(lambda: gateway.copies("<hangup@customer.test>") == 1, "the commit")
    code, answer = send(gateway.port, data, timeout=10)
    assert code == 250 and "duplicate" in answer and TICKET.search(answer), answer
    assert send(gateway.port, mail("bob@customer.test", "next one"), timeout=10)[0] == 250
    assert gateway.copies("<hangup@customer.test>") == 1
    assert gateway.counts() == (2, 2)


# -- 451 on our faults, then exactly once on the retry ------------------------------------

def stored_once_on_retry(gateway: Gateway, data: bytes, message_id: str) -> None:
    """What the sending MTA does after a 451: the same bytes again, now taken once, and no
    receipt left half-way (every RawMail row settled)."""
    code, answer = send(gateway.port, data)
    assert code == 250 and "created" in answer, answer
    assert gateway.copies(message_id) == 1
    with gateway.runtime.sessions() as session:
        assert RawState.RECEIVED not in session.scalars(select(RawMail.state)).all()


def ingest_workers(parent: int | None = None) -> list[int]:
    """The children that multiprocessing spawned for a process (this one by default): the
    listener's ingest worker."""
    me, found = str(parent or os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            spawned = b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if parent == me and spawned:
            found.append(int(stat.parent.name))
    return found


def test_mail_held_by_a_killed_ingest_worker_gets_451_and_a_new_worker_takes_the_retry(
        tmp_path: Path, database_url: str) -> None:
    """The worker dies (the OOM killer, kill -9) while it holds a message in its commit:
    the client hears 451, never 250, and the sender's retry is stored once by the worker
    that replaces it."""
    data = mail("ann@customer.test", "worker gone", message_id="<gone@customer.test>")
    with gateway_in_process(tmp_path, database_url,
                            database={"url": database_url, "busy_timeout_ms": 60000}
                            ) as gateway:
        assert send(gateway.port, mail("bob@customer.test", "before"))[0] == 250
        (worker,) = ingest_workers()
        store = gateway.runtime.settings.storage.path
        with commits_held(gateway), ThreadPoolExecutor(1) as client:
            answer = client.submit(send, gateway.port, data)
            wait_until(lambda: any(b"<gone@customer.test>" in path.read_bytes()
                                   for path in store.glob("??/*")), "the worker to take it")
            os.kill(worker, signal.SIGKILL)
            code, text_ = answer.result(timeout=30)
        assert (code, text_[:5]) == (451, "4.3.0"), text_
        stored_once_on_retry(gateway, data, "<gone@customer.test>")
        assert ingest_workers() and worker not in ingest_workers()
        assert gateway.counts() == (2, 2)


def test_the_ingest_worker_ends_when_the_listener_is_killed(tmp_path: Path,
                                                            database_url: str) -> None:
    """SIGKILL of `mailgateway run` leaves no worker waiting for work for ever."""
    with gateway_process(tmp_path, database_url) as gateway:
        assert send(gateway.port, mail("ann@customer.test", "before the kill"))[0] == 250
        workers = ingest_workers(gateway.process.pid)
        assert len(workers) == 1
        gateway.kill()
        wait_until(lambda: not Path(f"/proc/{workers[0]}").exists(), "the worker to end")


def test_ingest_inside_the_listeners_process_threads_a_reply_too(
        tmp_path: Path, database_url: str) -> None:
    """ingest_process = false: the batcher runs the ingest path itself (no worker)."""
    first = mail("ann@customer.test", "inside", message_id="<inside@customer.test>")
    reply = mail("ann@customer.test", "Re: inside", message_id="<inside2@customer.test>",
                 in_reply_to="<inside@customer.test>")
    with gateway_in_process(tmp_path, database_url, {"ingest_process": False}) as gateway:
        assert not ingest_workers()
        answers = [send(gateway.port, first), send(gateway.port, reply)]
        assert [code for code, _ in answers] == [250, 250], answers
        assert "created" in answers[0][1] and "appended" in answers[1][1], answers
        tickets = {TICKET.search(text).group(1) for _, text in answers}
        assert len(tickets) == 1, answers


def admin(url: URL):  # type: ignore[no-untyped-def]
    """A second connection to the gateway's database, as another program would open it."""
    if url.get_backend_name() == "sqlite":
        return closing(sqlite3.connect(url.database, isolation_level=None))
    return create_engine(url.set(query={}), isolation_level="AUTOCOMMIT").connect()


def schema_of(url: URL) -> str:
    return re.search(r"search_path=(\w+)", url.query["options"]).group(1)


@contextmanager
def database_away(gateway: Gateway, application: str) -> Iterator[None]:
    """SQLite: another process holds the write lock past our busy timeout. PostgreSQL: our
    connections are cut, and when we reconnect our schema has gone."""
    url = gateway.runtime.engine.url
    if url.get_backend_name() == "sqlite":
        with admin(url) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            yield
            holder.rollback()
        return
    schema = schema_of(url)
    with admin(url) as connection:
        connection.execute(text(f"ALTER SCHEMA {schema} RENAME TO {schema}_away"))
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :name"), {"name": application})
        try:
            yield
        finally:
            connection.execute(text(f"ALTER SCHEMA {schema}_away RENAME TO {schema}"))


def test_451_while_the_database_is_unavailable_then_the_retry_is_stored_once(
        tmp_path: Path, database_url: str) -> None:
    application = f"smtp451_{uuid.uuid4().hex[:12]}"  # to find our connections, not others'
    if database_url.startswith("postgresql"):
        database_url += f"&application_name={application}"
    data = mail("ann@customer.test", "while the database is away",
                message_id="<away@customer.test>")  # SQLite: locked past the busy timeout
    with gateway_in_process(tmp_path, database_url,
                            database={"url": database_url, "busy_timeout_ms": 300}) as gateway:
        assert send(gateway.port, mail("bob@customer.test", "before"))[0] == 250
        with database_away(gateway, application):
            code, answer = send(gateway.port, data)
        assert (code, answer[:5]) == (451, "4.3.0"), answer
        assert gateway.counts() == (1, 1)  # nothing of it: no receipt, no message
        stored_once_on_retry(gateway, data, "<away@customer.test>")


@contextmanager
def table_renamed(gateway: Gateway, table: str) -> Iterator[None]:
    """The table is out of reach of the gateway's queries, whatever they have cached."""
    url = gateway.runtime.engine.url
    qualified = table if url.get_backend_name() == "sqlite" else f"{schema_of(url)}.{table}"
    with admin(url) as connection:
        run = connection.execute if url.get_backend_name() == "sqlite" else (
            lambda sql: connection.execute(text(sql)))
        run(f"ALTER TABLE {qualified} RENAME TO {table}_away")
        try:
            yield
        finally:
            away = f"{qualified}_away" if "." in qualified else f"{table}_away"
            run(f"ALTER TABLE {away} RENAME TO {table}")


def test_451_when_the_message_cannot_be_committed_leaves_only_the_bytes(
        gateway: Gateway) -> None:
    """Receipt and message commit together: when that commit fails the client gets 451,
    the database holds nothing half-done, the bytes wait in the store, and the retry is
    stored once."""
    data = mail("ann@customer.test", "half way", message_id="<half@customer.test>")
    with table_renamed(gateway, "message"):
        code, answer = send(gateway.port, data)
    assert (code, answer[:5]) == (451, "4.3.0"), answer
    assert gateway.counts() == (0, 0)
    kept = list(gateway.runtime.settings.storage.path.glob("??/*"))
    assert len(kept) == 1 and b"<half@customer.test>" in kept[0].read_bytes()
    stored_once_on_retry(gateway, data, "<half@customer.test>")
    assert gateway.counts() == (1, 1)


def test_451_when_the_store_folder_is_unusable_then_the_retry_is_stored_once(
        gateway: Gateway) -> None:
    assert send(gateway.port, mail("bob@customer.test", "before"))[0] == 250
    store = gateway.runtime.settings.storage.path
    aside = store.with_name("store-aside")
    store.rename(aside)
    store.write_text("a file where the folder should be")
    data = mail("ann@customer.test", "no disk", message_id="<nodisk@customer.test>")
    try:
        code, answer = send(gateway.port, data)
    finally:
        store.unlink()
        aside.rename(store)
    assert (code, answer[:5]) == (451, "4.3.0"), answer
    assert gateway.counts() == (1, 1)
    stored_once_on_retry(gateway, data, "<nodisk@customer.test>")
    assert gateway.counts() == (2, 2)


# -- STARTTLS and AUTH --------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made fresh for the run."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "1",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def trusting(cert: Path) -> ssl.SSLContext:
    """A client that trusts exactly this certificate and checks the name in it."""
    return ssl.create_default_context(cafile=str(cert))


def test_require_tls_refuses_mail_before_starttls_and_takes_it_after(
        tmp_path: Path, database_url: str, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    data = mail("ann@customer.test", "over TLS", message_id="<tls@customer.test>")
    with gateway_in_process(tmp_path, database_url, smtp={
            "tls_cert": str(cert), "tls_key": str(key), "require_tls": True}) as gateway, \
            smtplib.SMTP(HOST, gateway.port, timeout=30) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, answer = client.mail("ann@customer.test")
        assert code == 530 and b"STARTTLS" in answer
        assert client.starttls(context=trusting(cert))[0] == 220
        assert isinstance(client.sock, ssl.SSLSocket) and client.sock.version().startswith("TLS")
        code, answer = deliver(client, "ann@customer.test", ["support@example.com"], data)
        assert code == 250 and TICKET.search(answer), answer
        assert gateway.copies("<tls@customer.test>") == 1


@pytest.fixture
def authenticating(tmp_path: Path, database_url: str, certificate: tuple[Path, Path],
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A listener for a relay that must log in, over STARTTLS."""
    monkeypatch.setenv("MAILGATEWAY_TEST_RELAY_PASSWORD", "s3cret relay pass")
    cert, key = certificate
    with gateway_in_process(tmp_path, database_url, smtp={
            "tls_cert": str(cert), "tls_key": str(key), "auth_user": "relay",
            "auth_password_env": "MAILGATEWAY_TEST_RELAY_PASSWORD"}) as gateway:
        yield gateway


def test_auth_is_required_offered_only_over_tls_and_checks_the_password(
        authenticating: Gateway, certificate: tuple[Path, Path]) -> None:
    data = mail("ann@customer.test", "through the relay", message_id="<relayed@customer.test>")
    with smtplib.SMTP(HOST, authenticating.port, timeout=30) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # never a password in clear text
        assert client.mail("ann@customer.test")[0] == 530
        client.starttls(context=trusting(certificate[0]))
        client.ehlo()
        assert client.has_extn("auth")
        assert client.mail("ann@customer.test")[0] == 530  # TLS alone is not enough
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("relay", "wrong password")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("someone", "s3cret relay pass")
        assert client.login("relay", "s3cret relay pass")[0] == 235
        code, answer = deliver(client, "ann@customer.test", ["support@example.com"], data)
        assert code == 250 and TICKET.search(answer), answer
    assert authenticating.copies("<relayed@customer.test>") == 1


def test_credentials_that_are_not_utf8_get_535_not_451(
        authenticating: Gateway, certificate: tuple[Path, Path]) -> None:
    """Regression: the authenticator decoded the login as UTF-8, so a relay sending Latin-1
    credentials got '451 Internal error' (and a logged traceback) and retried forever."""
    with smtplib.SMTP(HOST, authenticating.port, timeout=30) as client:
        client.starttls(context=trusting(certificate[0]))
        client.ehlo()
        plain = base64.b64encode(b"\0r\xe9lay\0s3cret relay pass").decode()
        code, answer = client.docmd("AUTH", f"PLAIN {plain}")
        assert (code, answer[:5]) == (535, b"5.7.8"), answer
        assert client.login("relay", "s3cret relay pass")[0] == 235


def test_swaks_delivers_with_starttls_and_auth(authenticating: Gateway, tmp_path: Path) -> None:
    data = mail("ann@customer.test", "swaks over TLS", message_id="<swaks-tls@customer.test>")
    transcript = swaks(authenticating.port, data, tmp_path, "--tls", "--auth", "PLAIN",
                       "--auth-user", "relay", "--auth-password", "s3cret relay pass")
    assert "<~  235" in transcript, transcript
    assert data_answer(transcript).startswith("250 "), transcript
    refused = swaks(authenticating.port, data, tmp_path, "--tls", "--auth", "LOGIN",
                    "--auth-user", "relay", "--auth-password", "guess")
    assert "<~* 535" in refused, refused
    assert authenticating.copies("<swaks-tls@customer.test>") == 1
