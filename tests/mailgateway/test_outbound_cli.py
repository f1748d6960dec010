"""`mailgateway outbox ...` and the sender inside `mailgateway run`, as real processes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from mailgateway.ingest import Source, receive
from tests.mailgateway.relay import Relay, gateway, running
from tests.mailgateway.smtp_gateway import MAILGATEWAY, gateway_process, mail, send


def cli(config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(MAILGATEWAY), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) == ok, done.stderr
    return done


def test_outbox_list_retry_send_and_purge(tmp_path: Path, database_url: str) -> None:
    refuse = [True]
    relay = Relay(answer=lambda n, _: "550 5.7.1 relaying denied" if refuse[0] else "250 OK")
    with running(relay) as port, gateway(tmp_path, database_url, port) as runtime:
        config = runtime.settings.path
        receive(runtime, mail("ann@customer.test", "Broken"), Source("pipe"))
        assert "failed 1" in cli(config, "outbox", "send").stdout
        [row] = json.loads(cli(config, "outbox", "list", "--state", "failed", "--json").stdout)
        assert row["state"] == "failed" and row["kind"] == "acknowledgement"
        assert row["last_error"] == "550 5.7.1 relaying denied"
        assert row["recipients"] == ["ann@customer.test"] and "[ACME #" in row["subject"]

        refuse[0] = False
        assert "queued again" in cli(config, "outbox", "retry", str(row["id"])).stdout
        assert "sent 1" in cli(config, "outbox", "send").stdout
        assert len(relay.delivered) == 1
        again = cli(config, "outbox", "retry", str(row["id"]), ok=False)
        assert "only failed mail is retried" in again.stderr

        assert "purged 0" in cli(config, "outbox", "purge").stdout  # sent just now: kept
        assert "purged 1" in cli(config, "outbox", "purge", "--older-than", "0").stdout
        assert "sent" not in cli(config, "outbox", "list").stdout


def test_mailgateway_run_sends_the_acknowledgement_at_once(
        tmp_path: Path, database_url: str) -> None:
    relay = Relay()
    with running(relay) as relay_port, gateway_process(
            tmp_path, database_url, outbound={"transport": "smtp", "host": "127.0.0.1",
                                              "port": relay_port, "tls": "none"}) as gw:
        started = time.monotonic()
        code, _ = send(gw.port, mail("ann@customer.test", "Printer on fire",
                                     message_id="<fire@customer.test>"))
        assert code == 250
        [ack] = relay.wait_for(1, timeout=10)
        assert time.monotonic() - started < 5  # woken by the commit, not the 10 s sweep
        assert ack.mail["In-Reply-To"] == "<fire@customer.test>"
        assert ack.mail["Auto-Submitted"] == "auto-replied"
        code, _ = send(gw.port, mail("ann@customer.test", "Re: Printer on fire",
                                     in_reply_to=ack.mail["Message-ID"]))
        assert code == 250
        time.sleep(1)
        assert len(relay.delivered) == 1  # an answer on the ticket is not acknowledged
