"""Two processes importing at once, touching the same contacts and tickets in opposite order:
on PostgreSQL one of them is chosen as a deadlock's victim, and its batch must simply run again."""

from __future__ import annotations

import mailbox
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func, select

from mailgateway.config import load_settings
from mailgateway.runtime import open_runtime
from models.schema import Contact, Message, Ticket
from tests.conftest import write_config

SENDERS = 25


def maildir(folder: Path, name: str, order: list[int]) -> Path:
    box = mailbox.Maildir(folder / name, create=True)
    for n in order:
        message = EmailMessage()
        message["From"] = f"person{n % SENDERS}@customer{n % SENDERS}.example"
        message["To"] = "support@example.com"
        message["Subject"] = f"Question {n}"
        message["Message-ID"] = f"<{name}-{n}@customer.example>"
        message.set_content(f"Question number {n}.")
        box.add(message)
    return folder / name


def test_two_imports_in_opposite_order_both_store_everything(tmp_path: Path,
                                                             database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    subprocess.run([sys.executable, "-m", "mailgateway", "--config", str(config), "init"],
                   check=True, capture_output=True)
    forward = maildir(tmp_path, "a", list(range(200)))
    backward = maildir(tmp_path, "b", list(reversed(range(200))))
    runs = [subprocess.Popen([sys.executable, "-m", "mailgateway", "--config", str(config),
                              "ingest", "--jobs", "1", "--maildir", str(box)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for box in (forward, backward)]
    outcomes = [(run.wait(timeout=240), run.stderr.read()) for run in runs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    runtime = open_runtime(load_settings(config))
    try:
        with runtime.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 400
            assert session.scalar(select(func.count()).select_from(Contact)) == SENDERS
    finally:
        runtime.close()


def test_a_parallel_import_threads_exactly_like_a_serial_one(tmp_path: Path,
                                                              database_url: str) -> None:
    """Replies sit in later chunks than their parents; workers parse side by side but commit
    in order, so no reply misses a parent another worker had not committed yet. (A Maildir's
    file names do not sort in the order the mail was written: some replies come before their
    parents, and must still end on the conversation's one ticket.)"""
    box = mailbox.Maildir(tmp_path / "history", create=True)
    for n in range(300):
        message = EmailMessage()
        message["From"] = f"person{n % 30}@customer{n % 30}.example"
        message["To"] = "support@example.com"
        message["Subject"] = f"Order {n % 30}"
        message["Message-ID"] = f"<h{n}@customer.example>"
        if n >= 30:
            message["In-Reply-To"] = f"<h{n - 30}@customer.example>"
        message.set_content(f"Message {n}.")
        box.add(message)
    config = write_config(tmp_path, database_url)
    subprocess.run([sys.executable, "-m", "mailgateway", "--config", str(config), "init"],
                   check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-m", "mailgateway", "--config", str(config),
                          "ingest", "--jobs", "2", "--maildir", str(tmp_path / "history")],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-500:]
    runtime = open_runtime(load_settings(config))
    try:
        with runtime.sessions() as session:
            live = session.scalars(select(Ticket).where(Ticket.merged_into_id.is_(None))).all()
            per_ticket = dict(session.execute(select(Message.ticket_id, func.count())
                                              .group_by(Message.ticket_id)).all())
            assert sorted(per_ticket.get(t.id, 0) for t in live) == [10] * 30
            assert sorted(t.message_count for t in live) == [10] * 30  # the inbox's count
    finally:
        runtime.close()
