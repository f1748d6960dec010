"""Two gateway processes on one PostgreSQL database, reading the same mailbox: exactly one
polls it (an advisory lock per account); when that one dies, the other takes over, and
no message is fetched twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.dovecot import Dovecot, Gateway, imap_account, mail, wait_for

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
TAKEN = re.compile(r"imap support: UID (\d+) (\w+):")


def run_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([str(MAILGATEWAY), "--config", str(config), "run"],
                                stdout=out, stderr=subprocess.STDOUT, env=os.environ)


@pytest.fixture
def on_postgresql(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("with SQLite there is one gateway process: no lock to share")


def test_one_of_two_processes_polls_and_the_other_takes_over_when_it_dies(
        on_postgresql: None, dovecot: Dovecot, gateway: Gateway, tmp_path: Path) -> None:
    config = gateway.configure(imap_account(dovecot), smtp={"enabled": False},
                               web={"enabled": False})
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = run_gateway(config, logs[0])
    second = None
    try:
        holder = lambda: (s := gateway.state()) and s.connected and s.status.get("holder")  # noqa: E731
        wait_for(lambda: (holder() or "").endswith(f":{first.pid}"), 20)
        second = run_gateway(config, logs[1])
        wait_for(lambda: "another process polls this account; standing by"
                 in logs[1].read_text(), 20)
        for n in (1, 2):
            dovecot.append(mail(f"<pg-{n}@customer.test>", f"Question {n}"))
        wait_for(lambda: gateway.last_uid() == 2)
        # (it logs each message just after its commit: the kill must not fall in between)
        wait_for(lambda: len(TAKEN.findall(logs[0].read_text())) == 2)

        first.send_signal(signal.SIGKILL)
        first.wait()
        dovecot.append(mail("<pg-3@customer.test>", "Asked while the poller was dead"))
        wait_for(lambda: (holder() or "").endswith(f":{second.pid}"), 20)
        wait_for(lambda: gateway.last_uid() == 3)
        dovecot.append(mail("<pg-4@customer.test>", "Asked after the takeover"))
        wait_for(lambda: gateway.last_uid() == 4)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
    assert second.returncode == 0, "stops cleanly on SIGTERM"

    said = [log.read_text() for log in logs]
    assert "connected to" not in said[1].split("took over polling from another process")[0]
    fetched = Counter(uid for text in said for uid, _ in TAKEN.findall(text))
    assert fetched == {"1": 1, "2": 1, "3": 1, "4": 1}, said
    assert {uid for uid, _ in TAKEN.findall(said[0])} == {"1", "2"}
    assert gateway.tickets() == {f"pg-{n}@customer.test": [n] for n in (1, 2, 3, 4)}
