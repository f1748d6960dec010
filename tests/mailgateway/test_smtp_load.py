"""The SMTP listener under load, on SQLite and PostgreSQL: concurrent clients share group
commits, and a gateway killed with SIGKILL in the middle loses no message that got its 250
and stores none twice once the senders have retried."""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import distinct, func, select

from models.schema import Direction, Message, RawMail, RawState
from tests.mailgateway.smtp_gateway import (
    HOST,
    Gateway,
    deliver,
    gateway_in_process,
    gateway_process,
    mail,
)


@dataclass(eq=False)  # a thread is hashed by identity
class Customer(threading.Thread):
    """One sender on its own connection, writing a conversation: the first message opens a
    ticket, every later one replies to it. Like an MTA it sends the same bytes again until
    they are answered 250; it stops between messages, never in the middle of one."""

    number: int
    port: int
    stop: threading.Event
    limit: int | None = None
    acknowledged: dict[str, str] = field(default_factory=dict)  # Message-ID -> 250 text
    retries: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(name=f"customer-{self.number}", daemon=True)

    @property
    def address(self) -> str:
        return f"customer{self.number}@customer.test"

    def message(self, n: int) -> tuple[str, bytes]:
        message_id = f"<c{self.number}-m{n}@customer.test>"
        first = f"<c{self.number}-m0@customer.test>"
        body = f"Message {n} from customer {self.number}.\n" + "Some detail. " * 40 + "\n"
        return message_id, mail(self.address, f"Order {self.number}", body,
                                message_id=message_id, in_reply_to=first if n else None)

    def run(self) -> None:
        try:
            self._send_all()
        except BaseException as error:  # noqa: BLE001 -- handed to the test thread
            self.error = error

    def _send_all(self) -> None:
        client, deadline, n = None, time.monotonic() + 90, 0
        while not self.stop.is_set() and n != self.limit:
            message_id, data = self.message(n)
            while True:
                assert time.monotonic() < deadline, f"{message_id} never got its 250"
                try:
                    client = client or smtplib.SMTP(HOST, self.port, timeout=20)
                    code, answer = deliver(client, self.address, ["support@example.com"],
                                           data)
                except (OSError, smtplib.SMTPException):
                    client = None  # killed or not yet back: reconnect and send it again
                    self.retries += 1
                    time.sleep(0.05)
                    continue
                if code == 250:
                    break
                assert code == 451, f"{message_id}: {code} {answer}"
                self.retries += 1
            self.acknowledged[message_id] = answer
            n += 1
        if client is not None:
            client.quit()


def start_customers(port: int, count: int, limit: int | None = None
                    ) -> tuple[list[Customer], threading.Event]:
    stop = threading.Event()
    customers = [Customer(n, port, stop, limit) for n in range(count)]
    for customer in customers:
        customer.start()
    return customers, stop


def finish(customers: list[Customer], stop: threading.Event) -> dict[str, str]:
    stop.set()
    for customer in customers:
        customer.join(timeout=120)
        assert not customer.is_alive(), f"{customer.name} hangs"
        if customer.error is not None:
            raise customer.error
    return {k: v for c in customers for k, v in c.acknowledged.items()}


def acknowledged_count(customers: list[Customer]) -> int:
    return sum(len(c.acknowledged) for c in customers)


def stored_exactly_once(gateway: Gateway, customers: list[Customer]) -> None:
    """Every acknowledged message stored once, nothing stored that was not acknowledged,
    each conversation on one ticket, and every raw receipt settled."""
    acknowledged = {k for c in customers for k in c.acknowledged}
    with gateway.runtime.sessions() as session:
        stored = session.execute(select(Message.message_id, func.count())
                                 .where(Message.direction == Direction.INBOUND)
                                 .group_by(Message.message_id)).all()
        twice = [message_id for message_id, count in stored if count > 1]
        assert not twice, f"stored twice: {twice[:5]}"
        assert {message_id for message_id, _ in stored} == acknowledged
        for customer in customers:
            tickets = session.scalar(select(func.count(distinct(Message.ticket_id)))
                                     .where(Message.from_address == customer.address))
            assert tickets == 1, f"{customer.address}: {tickets} tickets"
        unsettled = session.scalar(select(func.count()).select_from(RawMail)
                                   .where(RawMail.state == RawState.RECEIVED))
        assert unsettled == 0


def test_concurrent_clients_are_all_acknowledged_and_stored_once(
        tmp_path: Path, database_url: str) -> None:
    with gateway_in_process(tmp_path, database_url) as gateway:
        customers, stop = start_customers(gateway.port, count=8, limit=20)
        for customer in customers:
            customer.join(timeout=120)
        answers = finish(customers, stop)
        assert len(answers) == 160
        stored_exactly_once(gateway, customers)
        for customer in customers:  # every 250 names the conversation's one ticket
            named = {a.partition("ticket ")[2].split(",")[0] for a in
                     customer.acknowledged.values()}
            assert len(named) == 1 and named != {"None"}, named
        with gateway.runtime.sessions() as session:  # one batch = one received_at
            commits = session.scalar(select(func.count(distinct(RawMail.received_at))))
        assert commits < 160, "every message had a commit of its own: no group commit"


def test_sigkill_mid_load_loses_no_acknowledged_message_and_stores_none_twice(
        tmp_path: Path, database_url: str) -> None:
    with gateway_process(tmp_path, database_url) as gateway:
        customers, stop = start_customers(gateway.port, count=8)
        for _ in range(2):  # twice, to land a kill inside a commit more surely
            wait_for_more(customers, 40)
            gateway.kill()
            gateway.start()
        wait_for_more(customers, 40)
        finish(customers, stop)
        stored_exactly_once(gateway, customers)
        assert sum(c.retries for c in customers) > 0, "no send was cut off by the kill"


def wait_for_more(customers: list[Customer], more: int, timeout: float = 60) -> None:
    wanted = acknowledged_count(customers) + more
    deadline = time.monotonic() + timeout
    while acknowledged_count(customers) < wanted:
        assert time.monotonic() < deadline, f"{acknowledged_count(customers)} of {wanted}"
        for customer in customers:
            if customer.error is not None:
                raise customer.error
        time.sleep(0.02)
