"""`mailgateway imap test` and `mailgateway imap status`, run as real processes against a
real Dovecot: what an admin reads when a mailbox works, when it does not, and whether
every message in the folder was taken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.dovecot import Dovecot, Gateway, free_port, imap_account, mail, wait_for

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")


def mailgateway(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILGATEWAY), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_imap_test_shows_the_folder_and_what_the_gateway_will_do(
        dovecot: Dovecot, sqlite_gateway: Gateway) -> None:
    dovecot.create_folder("Done")
    dovecot.append(mail("<one@customer.test>", "One"))
    config = sqlite_gateway.configure(imap_account(dovecot, processed_folder="Done"))
    done = mailgateway(config, "imap", "test", "support")
    assert done.returncode == 0, done.stderr
    assert f"connecting to 127.0.0.1:{dovecot.port} (no TLS) as support (password)" in done.stdout
    assert "INBOX: 1 messages, UIDVALIDITY" in done.stdout
    assert "processed folder Done: exists" in done.stdout
    capabilities = next(line for line in done.stdout.splitlines()
                        if line.startswith("capabilities:")).split()
    assert {"IDLE", "MOVE", "UIDPLUS"} <= set(capabilities)
    assert ("waits in IDLE (new mail within about a second) and flags taken messages \\Seen "
            "and moves them to Done (MOVE)") in done.stdout


def test_imap_test_says_plainly_what_is_wrong(dovecot: Dovecot, sqlite_gateway: Gateway,
                                              monkeypatch) -> None:
    monkeypatch.setenv("TEST_WRONG_PASSWORD", "nope")
    config = sqlite_gateway.configure(
        imap_account(dovecot, name="wrong", password_env="TEST_WRONG_PASSWORD"),
        imap_account(dovecot, name="closed", port=free_port()),
        imap_account(dovecot, name="nofolder", folder="Nowhere"),
        imap_account(dovecot, name="tls", tls=True),
        imap_account(dovecot, name="noenv", password_env="TEST_UNSET_PASSWORD"),
        imap_account(dovecot, name="nopassword", password_env=""))
    said = {}
    for name in ("wrong", "closed", "nofolder", "tls", "noenv", "nopassword"):
        done = mailgateway(config, "imap", "test", name)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        said[name] = done.stderr.strip()
    assert said["wrong"] == ("FAILED: login as support refused: [AUTHENTICATIONFAILED] "
                             "Authentication failed.")
    assert said["closed"].startswith("FAILED: cannot connect to 127.0.0.1:")
    assert said["closed"].endswith("connection refused (is the server up, the port right?)")
    assert said["nofolder"] == "FAILED: there is no folder 'Nowhere' on the server"
    assert said["tls"].startswith(f"FAILED: TLS with 127.0.0.1:{dovecot.port} failed: ")
    assert said["noenv"] == ("FAILED: [imap] password_env (noenv): environment variable "
                             "TEST_UNSET_PASSWORD is not set")
    assert said["nopassword"] == ("FAILED: [imap] password_env (nopassword): empty; name the "
                                  "environment variable with the password")
    unknown = mailgateway(config, "imap", "test", "nobody")
    assert unknown.returncode != 0
    assert ("no [[imap]] account named 'nobody' (configured: wrong, closed, nofolder, tls, "
            "noenv, nopassword)") in unknown.stderr


def test_imap_status_proves_every_message_was_taken_or_names_the_ones_not_yet(
        dovecot: Dovecot, gateway: Gateway) -> None:
    config = gateway.configure(imap_account(dovecot),
                               imap_account(dovecot, name="off", enabled=False))
    gateway.start()
    for n in (1, 2):
        dovecot.append(mail(f"<status-{n}@customer.test>", f"Status {n}"))
    wait_for(lambda: gateway.last_uid() == 2)
    gateway.stop()
    dovecot.append(mail("<status-3@customer.test>", "Arrived while stopped"))

    done = mailgateway(config, "imap", "status")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    uidvalidity = dovecot.uidvalidity()
    assert lines[0] == (f"support: support@127.0.0.1:{dovecot.port} INBOX (enabled, IDLE)")
    assert "connected: no" in lines
    assert f"UIDVALIDITY: {uidvalidity}, last UID taken: 2" in lines
    assert "taken today: 2" in lines
    assert "last error: none" in lines
    off = lines.index(f"off: support@127.0.0.1:{dovecot.port} INBOX (disabled, IDLE)")
    assert lines[off + 1:] == ["never connected", ""], "a disabled account is not contacted"
    assert "folder: INBOX holds 3 messages up to UID 3; we have taken 2, not yet 1: UID 3" in lines
    poller = next(line for line in lines if line.startswith("poller:"))
    if gateway.runtime.engine.dialect.name == "postgresql":
        assert poller == "poller: no gateway process polls this account now"

    gateway.start()
    wait_for(lambda: gateway.last_uid() == 3)
    done = mailgateway(config, "imap", "status")
    assert "folder: INBOX holds 3 messages up to UID 3; we have taken all 3" in done.stdout
    assert "connected: yes" in done.stdout
    if gateway.runtime.engine.dialect.name == "postgresql":
        assert "poller: a gateway process holds the account's lock" in done.stdout
