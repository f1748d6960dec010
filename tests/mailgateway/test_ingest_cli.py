"""`mailgateway ingest` and `mailgateway quarantine` as real processes, on both databases:
what an MTA pipe, an import and an admin see (JSON lines, exit codes 0, 65 and 75)."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.runtime import Runtime, open_runtime
from models.inbound import quarantined
from models.schema import Message, RawMail, Ticket
from models.store import sha256_hex
from tests.conftest import write_config
from tests.mailgateway.ingest_support import FIRST_MAIL, corpus_path, eml, set_header

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
TWO_QUEUES = [{"name": "Support", "address": "support@example.com", "default": True},
              {"name": "Billing", "address": "billing@example.com"}]


def mailgateway(config: Path, *args: str, stdin: bytes | None = None
                ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(MAILGATEWAY), "--config", str(config), "--log-level", "warning",
                           *args], input=stdin, capture_output=True, timeout=120)


def json_lines(done: subprocess.CompletedProcess[bytes]) -> list[dict]:
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


@pytest.fixture
def opened(config: Path) -> Iterator[Runtime]:
    """The database the commands use, initialised (what `init` does) and open for checks."""
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    yield runtime
    runtime.close()


def test_a_piped_reply_threads_and_ticket_show_says_how(
        tmp_path: Path, config: Path, opened: Runtime) -> None:
    first = mailgateway(config, "ingest", stdin=eml("thunderbird-new-ticket"))
    assert first.returncode == 0, first.stderr
    assert json_lines(first) == [{"action": "created", "ticket": 1, "message_id": FIRST_MAIL,
                                  "reason": "new", "raw_id": 1}]
    ours = tmp_path / "ours.eml"  # our own mail come back: kept, ignored, still exit 0
    ours.write_bytes(set_header(set_header(eml("human-out-of-office-question"), "From",
                                           "Support <support@example.com>"),
                                "Message-ID", "<loop@example.com>"))
    more = mailgateway(config, "ingest", str(corpus_path("outlook-reply-all-before-original")),
                       str(ours))
    reply, ignored = json_lines(more)
    assert more.returncode == 0 and (reply["action"], reply["ticket"]) == ("appended", 1)
    assert (ignored["action"], ignored["ticket"]) == ("ignored", None)

    shown = json.loads(mailgateway(config, "ticket", "show", "1", "--json").stdout)
    received = [m for m in shown["messages"] if m["direction"] == "inbound"]
    assert [(m["from"], m["threaded_by"], m["threaded_ref"]) for m in received] == [
        ("anna.berg@northwind.example", "new", None),
        ("jonas.weber@northwind.example", "in-reply-to", FIRST_MAIL)]


def test_mbox_and_maildir_imports_keep_the_bytes_as_they_came(
        tmp_path: Path, config: Path, opened: Runtime) -> None:
    """Regression: the mbox import stored message.as_bytes(), which refolds long headers
    and rewrites 8-bit ones, so the raw message kept was not the one received."""
    quoted = EmailMessage()  # found by QA: mbox quotes a body line "From ..." as ">From ..."
    quoted["From"], quoted["Subject"] = "ann@customer.test", "From lines"
    quoted.set_content("Hi,\n\nFrom Monday on the printer is broken.\n")
    originals = [eml("raw-8bit-headers"), eml("mailman-list-post"), eml("gmail-stranger-forward"),
                 bytes(quoted)]
    box = mailbox.mbox(tmp_path / "history.mbox")
    for data in originals:
        box.add(data)
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    for data in originals:
        maildir.add(data)

    imported = mailgateway(config, "ingest", "--mbox", str(tmp_path / "history.mbox"))
    assert imported.returncode == 0, imported.stderr
    assert [r["action"] for r in json_lines(imported)] == ["created"] * 4
    with opened.sessions() as session:
        kept = [opened.store.get(sha) for sha in session.scalars(
            select(RawMail.sha256).order_by(RawMail.id))]
    assert kept == originals

    again = mailgateway(config, "ingest", "--maildir", str(tmp_path / "Maildir"))
    assert again.returncode == 0, again.stderr
    assert sorted(r["action"] for r in json_lines(again)) == ["duplicate"] * 4


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_maildir_import_takes_new_and_cur_in_key_order(
        tmp_path: Path, config: Path, opened: Runtime, jobs: str) -> None:
    """The workers read the files themselves: the order is still mailbox.Maildir's, new/
    and cur/ both; a dot file is not a message (Python 3.13's mailbox skips them too)."""
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    keys = {}
    for n in range(7):
        message = mailbox.MaildirMessage(set_header(eml("gmail-new-ticket"), "Message-ID",
                                                    f"<order-{n}@example.net>"))
        message.set_subdir("cur" if n % 2 else "new")
        message.set_flags("S" if n % 3 else "")
        keys[maildir.add(message)] = f"<order-{n}@example.net>"
    (tmp_path / "Maildir" / "cur" / ".partial:2,").write_bytes(b"Subject: half\n")

    imported = mailgateway(config, "ingest", "--jobs", jobs, "--maildir",
                           str(tmp_path / "Maildir"))
    assert imported.returncode == 0, imported.stderr
    assert [r["message_id"] for r in json_lines(imported)] == [keys[k] for k in sorted(keys)]


def test_a_folder_that_is_no_maildir_is_refused_in_one_line(tmp_path: Path,
                                                             config: Path) -> None:
    """Found by QA: a traceback ending in FileNotFoundError .../cur, exit 1."""
    (tmp_path / "exported").mkdir()
    refused = mailgateway(config, "ingest", "--maildir", str(tmp_path / "exported"))
    assert refused.returncode == 2 and refused.stdout == b""
    assert b"is not a Maildir: it has no cur/ or new/ folder" in refused.stderr
    assert b"Traceback" not in refused.stderr


def test_a_progress_bar_on_a_terminal_counts_messages_and_keeps_the_json_lines_whole(
        tmp_path: Path, config: Path, opened: Runtime) -> None:
    """Found by QA: the bar counted a dot file the import skips (ended at 3/4), and on one
    terminal the first JSON line was written on the bar's line."""
    import fcntl
    import pty
    import struct
    import termios

    maildir = mailbox.Maildir(tmp_path / "Maildir")
    for name in ("thunderbird-new-ticket", "gmail-new-ticket", "billing-new"):
        maildir.add(eml(name))
    (tmp_path / "Maildir" / "cur" / ".partial:2,").write_bytes(b"Subject: half\n")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a window
    process = subprocess.Popen([str(MAILGATEWAY), "--config", str(config), "--log-level",
                                "warning", "ingest", "--jobs", "1", "--maildir",
                                str(tmp_path / "Maildir")], stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=60) == 0
    os.close(leader)
    text = seen.decode()
    assert "3/3" in text and "/4" not in text
    lines = [line for line in text.replace("\r", "\n").splitlines() if '"action"' in line]
    assert len(lines) == 3 and all(line.startswith('{"action": "created"') for line in lines)


def test_not_a_message_exits_65_and_waits_in_quarantine(config: Path, opened: Runtime) -> None:
    garbage = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog>> endobj\n"
    piped = mailgateway(config, "ingest", stdin=garbage)
    assert piped.returncode == 65
    [result] = json_lines(piped)
    assert result["action"] == "quarantined" and "not an email message" in result["reason"]

    [listed] = json.loads(mailgateway(config, "quarantine", "list", "--json").stdout)
    assert (listed["id"], listed["size"]) == (result["raw_id"], len(garbage))
    assert listed["reason"] == "not an email message: no header block"
    again = mailgateway(config, "ingest", stdin=garbage)  # found by QA: exited 0 the 2nd time
    assert again.returncode == 65
    assert json_lines(again)[0]["reason"] == "already quarantined: " + listed["reason"]
    shown = mailgateway(config, "quarantine", "show", str(listed["id"]), "--raw")
    assert shown.returncode == 0 and shown.stdout == garbage

    deleted = mailgateway(config, "quarantine", "delete", str(listed["id"]))
    assert deleted.stdout.decode().strip() == f"deleted #{listed['id']}"
    with opened.sessions() as session:
        assert quarantined(session) == []


def test_quarantine_retry_after_the_fix_runs_the_normal_path(
        tmp_path: Path, config: Path, opened: Runtime) -> None:
    """Billing was added to config.toml, but `init` has not run yet."""
    write_config(tmp_path, opened.settings.database.url, queues=TWO_QUEUES)
    piped = mailgateway(config, "ingest", str(corpus_path("billing-new")))
    assert piped.returncode == 0, piped.stderr  # kept, so the MTA must not retry or bounce
    [result] = json_lines(piped)
    assert result["action"] == "quarantined" and "run `mailgateway init`" in result["reason"]

    fixed = open_runtime(load_settings(config))
    prepare_database(fixed)  # what `mailgateway init` does
    fixed.close()
    retried = mailgateway(config, "quarantine", "retry", str(result["raw_id"]))
    [after] = json_lines(retried)
    assert (after["action"], after["reason"]) == ("created", "new")
    with opened.sessions() as session:
        assert session.get(Ticket, after["ticket"]).queue.name == "Billing"
        assert quarantined(session) == []


def test_an_unreachable_database_exits_75_so_the_mta_retries(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://postgres@127.0.0.1:9/mailgateway")
    piped = mailgateway(config, "ingest", stdin=eml("thunderbird-new-ticket"))
    assert piped.returncode == 75 and piped.stdout == b""
    [line] = piped.stderr.decode().strip().splitlines()
    assert line.startswith("mailgateway: database unavailable:")


def test_a_message_store_that_cannot_be_written_exits_75(tmp_path: Path) -> None:
    """Regression: a file where the store folder should be gave a traceback and exit 1,
    which an MTA takes as a permanent failure and bounces the mail."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/mailgateway.db",
                          storage={"path": "store"})
    (tmp_path / "store").write_text("not a folder")
    piped = mailgateway(config, "ingest", stdin=eml("thunderbird-new-ticket"))
    assert piped.returncode == 75 and piped.stdout == b""
    assert "Traceback" not in piped.stderr.decode()
    assert "cannot open the message store" in piped.stderr.decode()


def test_a_store_failure_in_one_job_exits_75_and_hangs_no_other(
        tmp_path: Path, database_url: str) -> None:
    """Regression: with --jobs 2, a chunk that failed before its commit never passed its
    turn on, so the next chunk waited for it for ever and the import hung instead of
    exiting 75. A file where the first mail's store folder should be makes it fail."""
    config = write_config(tmp_path, database_url, storage={"path": "store"})
    mails = [set_header(eml("gmail-new-ticket"), "Message-ID", f"<jobs-{n}@example.net>")
             for n in range(120)]  # three chunks of 50
    files = []
    for n, data in enumerate(mails):
        files.append(tmp_path / f"{n:03}.eml")
        files[-1].write_bytes(data)
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    runtime.close()
    (tmp_path / "store" / sha256_hex(mails[0])[:2]).write_text("not a folder")

    imported = mailgateway(config, "ingest", "--jobs", "2", *map(str, files))
    assert imported.returncode == 75, imported.stderr
    assert "cannot store the message" in imported.stderr.decode()
    assert imported.stdout == b""  # the first chunk failed: nothing after it is reported


def _fifty_mails() -> list[bytes]:
    """Ten conversations: a first mail and four replies each."""
    mails = []
    for conversation in range(10):
        for turn in range(5):
            mail = EmailMessage()
            mail["From"] = f"Customer {conversation} <customer{conversation}@fabrikam.example>"
            mail["To"] = "support@example.com"
            mail["Subject"] = ("Re: " if turn else "") + f"Order {conversation} is late"
            mail["Date"] = f"Wed, 5 Jun 2024 1{turn}:0{conversation}:00 +0200"
            mail["Message-ID"] = f"<c{conversation}.t{turn}@fabrikam.example>"
            if turn:
                mail["In-Reply-To"] = f"<c{conversation}.t{turn - 1}@fabrikam.example>"
            mail.set_content(f"Message {turn} about order {conversation}.\n")
            mails.append(mail.as_bytes())
    return mails


def _feed(pipes: list[Path], mails: list[bytes]) -> threading.Thread:
    def write() -> None:
        for pipe, data in zip(pipes, mails, strict=True):
            pipe.write_bytes(data)
    return threading.Thread(target=write)


def test_two_processes_ingesting_the_same_mails_at_once_store_each_once(
        tmp_path: Path, config: Path, opened: Runtime) -> None:
    """Both processes wait on named pipes until the mails are written to both at the same
    moment, so they receive, parse and commit the same 50 mails side by side."""
    mails = _fifty_mails()
    processes, feeders = [], []
    for name in ("a", "b"):
        pipes = [tmp_path / f"{name}-{number:02}.eml" for number in range(len(mails))]
        for pipe in pipes:
            os.mkfifo(pipe)
        processes.append(subprocess.Popen(
            [str(MAILGATEWAY), "--config", str(config), "--log-level", "warning", "ingest",
             *map(str, pipes)], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        feeders.append(_feed(pipes, mails))
    for feeder in feeders:
        feeder.start()
    outputs = [process.communicate(timeout=120) for process in processes]
    for feeder in feeders:
        feeder.join()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
    results = [json.loads(line) for stdout, _ in outputs for line in stdout.decode().splitlines()]
    assert len(results) == 100
    stored = Counter(r["message_id"] for r in results if r["action"] in ("created", "appended"))
    assert len(stored) == 50 and set(stored.values()) == {1}
    with opened.sessions() as session:
        per_id = dict(session.execute(
            select(Message.message_id, func.count()).where(Message.direction == "inbound")
            .group_by(Message.message_id)).all())
        raw_rows = session.scalar(select(func.count()).select_from(RawMail))
    assert len(per_id) == 50 and set(per_id.values()) == {1}
    assert raw_rows == 50
