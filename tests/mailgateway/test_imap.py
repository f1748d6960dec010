"""The IMAP poller against a real Dovecot: arrival to ticket in IDLE and polling mode,
acknowledgement only after commit, UID bookkeeping across crashes and UIDVALIDITY changes,
reconnects, and one broken account beside a working one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import pytest

from mailgateway.imap_client import reconcile
from mailgateway.ingest import IngestResult, Source, receive
from tests.dovecot import Dovecot, Gateway, imap_account, mail, wait_for


@pytest.mark.parametrize(("idle", "mode", "limit"), [(True, "idle", 2.0), (False, "poll", 1.9)])
def test_an_appended_message_becomes_a_ticket_quickly_and_a_reply_threads_onto_it(
        dovecot: Dovecot, gateway: Gateway, idle: bool, mode: str, limit: float) -> None:
    """IDLE: within 2 s of arrival; polling every second: before a second poll is due."""
    gateway.configure(imap_account(dovecot, idle=idle, poll_interval=1 if not idle else 300))
    gateway.start()
    wait_for(gateway.connected)
    assert gateway.state().status["mode"] == mode

    uid = dovecot.append(mail("<first@customer.test>", "Scanner jammed"))
    tickets, took = wait_for(lambda: gateway.tickets().get("first@customer.test"), 5)
    assert took < limit, f"{mode} took {took:.2f} s"
    wait_for(lambda: b"\\Seen" in dovecot.folder()[uid])

    dovecot.append(mail("<reply@customer.test>", "Re: Scanner jammed",
                        In_Reply_To="<first@customer.test>"))
    reply, _ = wait_for(lambda: gateway.tickets().get("reply@customer.test"), 5)
    assert reply == tickets and gateway.ticket_count() == 1
    wait_for(lambda: gateway.last_uid() == uid + 1)
    state = gateway.state()
    assert state.taken_today == 2 and state.last_error == "", "no reconnects on the way"


def test_flagged_and_moved_only_after_the_commit(dovecot: Dovecot, gateway: Gateway) -> None:
    """At the moment receive() has committed, the message is still unflagged in INBOX."""
    dovecot.create_folder("Processed")
    runtime_at_commit: list[tuple[bool, dict, dict]] = []

    def receive_and_look(data: bytes, source: Source) -> IngestResult:
        result = receive(gateway.runtime, data, source)
        stored = result.message_id.strip("<>") in gateway.tickets()
        runtime_at_commit.append((stored, dovecot.folder(), dovecot.folder("Processed")))
        return result

    gateway.configure(imap_account(dovecot, processed_folder="Processed"))
    gateway.start(receive_and_look)
    uid = dovecot.append(mail("<move-1@customer.test>", "Move me"))
    wait_for(lambda: dovecot.folder() == {} and dovecot.folder("Processed"))
    assert runtime_at_commit == [(True, {uid: set()}, {})]
    assert [b"\\Seen" in f for f in dovecot.folder("Processed").values()] == [True]
    assert gateway.tickets() == {"move-1@customer.test": [1]}


KILL_AFTER_COMMIT = """
import os, signal, sys, threading
from mailgateway.config import load_settings
from mailgateway.imap import Poller, Timing
from mailgateway.ingest import receive
from mailgateway.runtime import open_runtime

runtime = open_runtime(load_settings(sys.argv[1]))

def receive_then_die(data, source):
    receive(runtime, data, source)
    os.kill(os.getpid(), signal.SIGKILL)  # committed, not yet flagged

Poller(runtime, runtime.settings.imap[0], receive_then_die, threading.Event(), Timing()).run()
"""


def test_without_move_a_message_is_copied_flagged_deleted_and_expunged(
        sqlite_gateway: Gateway) -> None:
    without_move = "imap_capability = IMAP4rev1 IDLE UIDPLUS LITERAL+\n"
    with Dovecot.running(settings=without_move) as server:
        server.create_folder("Processed")
        server.append(mail("<copy-1@customer.test>", "Copy me"))
        sqlite_gateway.configure(imap_account(server, processed_folder="Processed"))
        sqlite_gateway.start()
        wait_for(lambda: server.folder() == {} and server.folder("Processed"))
        assert "UIDPLUS" in sqlite_gateway.state().status["capabilities"]
        assert "MOVE" not in sqlite_gateway.state().status["capabilities"]
        assert [flags for flags in server.folder("Processed").values()] == [{b"\\Seen"}]
        assert sqlite_gateway.tickets() == {"copy-1@customer.test": [1]}
        sqlite_gateway.stop()


def test_a_message_the_server_cannot_hand_over_is_skipped_and_reported(
        dovecot: Dovecot, gateway: Gateway) -> None:
    for n in (1, 2, 3):
        dovecot.append(mail(f"<bad-{n}@customer.test>", f"Message {n}"))
    dovecot.damage("bad-2@customer.test")
    gateway.configure(imap_account(dovecot))
    gateway.start()
    wait_for(lambda: gateway.last_uid() == 3)
    assert set(gateway.tickets()) == {"bad-1@customer.test", "bad-3@customer.test"}
    assert gateway.state().status["unreadable"] == [2]
    assert "FETCH failed" in gateway.state().last_error
    assert [b"\\Seen" in flags for flags in dovecot.folder().values()] == [True, False, True]
    state, client = gateway.state(), dovecot.client()
    found = reconcile(client, "INBOX", state.last_uid, state.status["unreadable"])
    client.logout()
    assert found.sentence(state.uidvalidity) == (
        "INBOX holds 3 messages up to UID 3; we have taken 2; the server would not hand "
        "over 1: UID 2 (see the log)")


def test_a_poller_killed_between_commit_and_flagging_leaves_no_duplicate(
        dovecot: Dovecot, gateway: Gateway) -> None:
    config = gateway.configure(imap_account(dovecot))
    uid = dovecot.append(mail("<crash-1@customer.test>", "Crash course"))
    died = subprocess.run([sys.executable, "-c", KILL_AFTER_COMMIT, str(config)],
                          env=os.environ, timeout=30, capture_output=True, text=True)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert gateway.tickets() == {"crash-1@customer.test": [1]}
    assert dovecot.folder() == {uid: set()}, "killed before flagging"
    assert gateway.last_uid() == 0

    gateway.start()
    wait_for(lambda: gateway.last_uid() == uid)
    assert b"\\Seen" in dovecot.folder()[uid]
    assert gateway.tickets() == {"crash-1@customer.test": [1]}
    assert gateway.ticket_count() == 1


def test_a_changed_uidvalidity_takes_the_folder_again_without_duplicates(
        dovecot: Dovecot, gateway: Gateway) -> None:
    gateway.configure(imap_account(dovecot))
    gateway.start()
    for n in (1, 2):
        dovecot.append(mail(f"<uv-{n}@customer.test>", f"Question {n}"))
    wait_for(lambda: gateway.last_uid() == 2)
    old = gateway.state().uidvalidity

    dovecot.set_uidvalidity(old + 1000)  # what recreating the folder looks like to a client
    dovecot.append(mail("<uv-3@customer.test>", "Question 3"))  # IDLE hears BYE; reconnect
    wait_for(lambda: "uv-3@customer.test" in gateway.tickets())
    wait_for(lambda: gateway.state().uidvalidity == old + 1000 and gateway.state().last_uid == 3)
    assert gateway.tickets() == {f"uv-{n}@customer.test": [n] for n in (1, 2, 3)}
    assert gateway.state().status["previous_uidvalidity"] == old


def test_a_message_a_person_already_read_is_still_taken(
        dovecot: Dovecot, gateway: Gateway) -> None:
    uid = dovecot.append(mail("<read-1@customer.test>", "Already read"), flags=(b"\\Seen",))
    gateway.configure(imap_account(dovecot))
    gateway.start()
    wait_for(lambda: "read-1@customer.test" in gateway.tickets())
    wait_for(lambda: gateway.last_uid() == uid)


def test_reconnects_after_the_server_restarts_and_takes_what_arrived_meanwhile(
        dovecot: Dovecot, gateway: Gateway) -> None:
    gateway.configure(imap_account(dovecot))
    gateway.start()
    dovecot.append(mail("<before@customer.test>", "Before the restart"))
    wait_for(lambda: "before@customer.test" in gateway.tickets())

    dovecot.stop()
    wait_for(lambda: not gateway.connected())
    # delivered while IMAP is down, as the server's delivery agent would
    dovecot.deliver(mail("<meanwhile@customer.test>", "While you were out"))
    dovecot.start()
    wait_for(lambda: "meanwhile@customer.test" in gateway.tickets(), 10)
    state, _ = wait_for(lambda: (s := gateway.state()).last_success_at > s.last_error_at and s)
    assert state.last_error  # refused, reset or broken pipe: kept, with its time
    dovecot.append(mail("<after@customer.test>", "After the restart"))
    wait_for(lambda: "after@customer.test" in gateway.tickets())
    assert gateway.ticket_count() == 3


def test_a_wrong_password_leaves_a_second_account_working_and_is_logged_once(
        dovecot: Dovecot, gateway: Gateway, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TEST_WRONG_PASSWORD", "not-the-password")
    gateway.configure(
        imap_account(dovecot, name="broken", password_env="TEST_WRONG_PASSWORD"),
        imap_account(dovecot, name="nofolder", folder="Nowhere"),
        imap_account(dovecot, name="support"))
    with caplog.at_level(logging.INFO, logger="mailgateway.imap"):
        gateway.start()
        dovecot.append(mail("<works@customer.test>", "Still working"))
        wait_for(lambda: "works@customer.test" in gateway.tickets())
        wait_for(lambda: dovecot.log().count("auth failed") >= 3, 5)  # retried, not given up
    broken = gateway.state("broken")
    assert not broken.connected and "login as support refused" in broken.last_error
    assert "no folder 'Nowhere'" in gateway.state("nofolder").last_error
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in said if m.startswith("imap broken:")]) == 1, said
    assert len([m for m in said if m.startswith("imap nofolder:")]) == 1, said


def test_stop_wakes_a_poller_waiting_in_idle(dovecot: Dovecot, gateway: Gateway) -> None:
    gateway.configure(imap_account(dovecot))
    gateway.start()
    wait_for(gateway.connected)
    stopping = threading.Thread(target=gateway.stop)
    stopping.start()
    stopping.join(timeout=3)
    assert not stopping.is_alive()
    assert not gateway.connected()
