"""The outbox's life cycle on both databases: claim under a lease, sent, retry, failed."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from mailgateway.runtime import Runtime
from models import outbox
from models.customer_mail import open_ticket
from models.errors import Conflict
from models.events import EventKind
from models.schema import Outbox, OutboxState, utcnow
from models.tickets import get_ticket
from tests.models.factories import default_queue, events, inbound


def queue_mail(runtime: Runtime, n: int = 1, *, with_ticket: bool = True) -> list[int]:
    with runtime.sessions.begin() as s:
        ticket = open_ticket(s, inbound(), queue=default_queue(s))[0] if with_ticket else None
        rows = [outbox.enqueue(s, kind=outbox.Kind.REPLY, recipients=["Anna@Customer.Example"],
                               context={"subject": f"mail {i}"}, ticket=ticket,
                               rfc_message_id=outbox.new_message_id("support@example.com"))
                for i in range(n)]
        return [r.id for r in rows]


def claim(runtime: Runtime, *, lease: int = 60, now=None, limit: int = 20) -> list[outbox.Claim]:
    with runtime.sessions.begin() as s:
        return outbox.claim_due(s, lease_seconds=lease, limit=limit, now=now)


def row(runtime: Runtime, outbox_id: int) -> Outbox:
    with runtime.sessions() as s:
        return s.get(Outbox, outbox_id)


def test_enqueue_fixes_the_message_id_and_lowercases_recipients(runtime: Runtime) -> None:
    [oid] = queue_mail(runtime)
    r = row(runtime, oid)
    assert r.state == OutboxState.QUEUED and r.attempts == 0
    assert r.recipients == ["anna@customer.example"]
    assert r.rfc_message_id.startswith("<") and r.rfc_message_id.endswith("@example.com>")
    assert outbox.new_message_id("a@example.com") != outbox.new_message_id("a@example.com")


def test_a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(runtime: Runtime) -> None:
    [oid] = queue_mail(runtime)
    [first] = claim(runtime, lease=60)
    assert first.outbox_id == oid and row(runtime, oid).state == OutboxState.SENDING
    assert claim(runtime) == []  # held
    # the sender died: after the lease another sender takes it, and the first lost it
    [second] = claim(runtime, now=utcnow() + timedelta(seconds=61))
    assert second.outbox_id == oid and row(runtime, oid).attempts == 2
    with runtime.sessions.begin() as s:
        assert outbox.mark_sent(s, first) is False  # fenced out
    with runtime.sessions.begin() as s:
        assert outbox.mark_sent(s, second) is True
    assert row(runtime, oid).state == OutboxState.SENT and row(runtime, oid).sent_at


def test_a_sent_row_is_never_claimed_again(runtime: Runtime) -> None:
    [oid] = queue_mail(runtime)
    [c] = claim(runtime)
    with runtime.sessions.begin() as s:
        outbox.mark_sent(s, c)
    assert claim(runtime, now=utcnow() + timedelta(days=30)) == []


def test_retry_backs_off_exponentially_then_fails_with_the_last_answer(runtime: Runtime) -> None:
    [oid] = queue_mail(runtime)
    now = utcnow()
    delays = []
    for attempt in range(1, 4):
        [c] = claim(runtime, now=now)
        with runtime.sessions.begin() as s:
            state = outbox.mark_retry(s, c, f"451 busy {attempt}", retry_delay=60,
                                      max_attempts=4, now=now)
        assert state == OutboxState.QUEUED
        r = row(runtime, oid)
        delays.append((r.next_attempt_at - now).total_seconds())
        assert claim(runtime, now=now) == []  # not due yet
        now = r.next_attempt_at
    assert 48 <= delays[0] <= 72 and 96 <= delays[1] <= 144 and 192 <= delays[2] <= 288
    [c] = claim(runtime, now=now)
    with runtime.sessions.begin() as s:
        assert outbox.mark_retry(s, c, "451 still busy", retry_delay=60, max_attempts=4,
                                 now=now) == OutboxState.FAILED
    r = row(runtime, oid)
    assert r.state == OutboxState.FAILED and "4 attempts" in r.last_error
    assert "451 still busy" in r.last_error


def test_failed_mail_records_an_event_and_an_admin_can_retry_it(runtime: Runtime) -> None:
    [oid] = queue_mail(runtime)
    [c] = claim(runtime)
    with runtime.sessions.begin() as s:
        assert outbox.mark_failed(s, c, "550 5.1.1 no such user")
    with runtime.sessions.begin() as s:
        r = s.get(Outbox, oid)
        [event] = events(s, get_ticket(s, r.ticket_id), EventKind.DELIVERY_FAILED)
        assert "550 5.1.1 no such user" in event.new and "anna@customer.example" in event.new
        outbox.retry(s, oid)
    r = row(runtime, oid)
    assert r.state == OutboxState.QUEUED and r.attempts == 0
    assert [c.outbox_id for c in claim(runtime)] == [oid]
    with runtime.sessions.begin() as s, pytest.raises(Conflict):
        outbox.retry(s, oid)  # it is sending, not failed


def test_purge_drops_old_sent_rows_only(runtime: Runtime) -> None:
    ids = queue_mail(runtime, 3)
    claims = claim(runtime)
    with runtime.sessions.begin() as s:
        outbox.mark_sent(s, claims[0], now=utcnow() - timedelta(days=40))
        outbox.mark_sent(s, claims[1])
        outbox.mark_failed(s, claims[2], "550 no")
    with runtime.sessions.begin() as s:
        assert outbox.purge(s, older_than=utcnow() - timedelta(days=30)) == 1
    with runtime.sessions() as s:
        left = set(s.scalars(select(Outbox.id)))
        assert left == set(ids[1:])
        assert [r.id for r in outbox.list_outbox(s, state=OutboxState.FAILED)] == [ids[2]]


def test_concurrent_senders_never_claim_the_same_row(runtime: Runtime) -> None:
    """SKIP LOCKED on PostgreSQL, one writer at a time on SQLite: either way each row once."""
    ids = queue_mail(runtime, 40, with_ticket=False)
    taken: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def sender() -> None:
        start.wait()
        while True:
            got = claim(runtime, limit=3)
            if not got:
                return
            with lock:
                taken.extend(c.outbox_id for c in got)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)
