"""The `mailgateway` command run as a real process against a real database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgateway import __version__
from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.runtime import Runtime, open_runtime
from models import users
from models.customer_mail import add_customer_message, open_ticket
from models.queues import queue_named
from models.schema import Direction
from models.tickets import AttachmentDraft, MessageDraft
from tests.conftest import ROOT, write_config

MAILGATEWAY = Path(sys.executable).with_name("mailgateway")
LOGIN = re.compile(r"demo admin: (\S+)  password: (\S+)")
TICKET_KEYS = {"id", "subject", "status", "priority", "queue", "requester", "assignee", "tags",
               "message_count", "created_at", "updated_at"}
MESSAGE_KEYS = {"id", "message_id", "direction", "from", "to", "cc", "subject", "date", "text",
                "reply_text", "html", "auto", "attachments"}


def mailgateway(config: Path, *args: str, stdin: str | None = None,
                ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(MAILGATEWAY), "--config", str(config), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """A refused command: non-zero exit, exactly one line on stderr, no traceback."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


@pytest.fixture
def opened(config: Path) -> Iterator[Runtime]:
    """The database the commands use, initialised and opened in this process (what `init`
    does; its own test runs it as a command) so tests can check the commands' work."""
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def initialised(config: Path, opened: Runtime) -> Path:
    return config


def test_init_twice_is_safe(config: Path) -> None:
    first = mailgateway(config, "init").stdout
    second = mailgateway(config, "init").stdout
    revision = re.search(r"database ready at revision (\w+)", first)
    assert revision and f"revision {revision.group(1)}" in second
    assert json.loads(mailgateway(config, "ticket", "list", "--json").stdout) == []


def test_init_demo_prints_a_working_login_and_makes_sample_tickets(config: Path) -> None:
    out = mailgateway(config, "init", "--demo").stdout
    login = LOGIN.search(out)
    assert login, out
    email, password = login.groups()
    runtime = open_runtime(load_settings(config))
    try:
        with runtime.sessions() as s:
            admin = users.authenticate(s, email, password)
            assert admin is not None and admin.is_admin and not admin.must_change_password
    finally:
        runtime.close()
    tickets = json.loads(mailgateway(config, "ticket", "list", "--json").stdout)
    assert len(tickets) >= 3 and all(t["message_count"] >= 1 for t in tickets)
    assert any(t["message_count"] > 1 for t in tickets)

    again = mailgateway(config, "init", "--demo").stdout
    assert "already present" in again and not LOGIN.search(again)
    assert len(json.loads(mailgateway(config, "ticket", "list", "--json").stdout)) == len(tickets)


def test_agent_add_list_set_password_deactivate(initialised: Path, opened: Runtime) -> None:
    config = initialised
    added = mailgateway(config, "agent", "add", "Ann@Example.com", "--name", "Ann").stdout
    printed = re.search(r"password: (\S+)", added)
    assert "added agent ann@example.com" in added and printed
    mailgateway(config, "agent", "add", "root@example.com", "--admin", "--password-stdin",
                stdin="chosen by root\n")

    with opened.sessions() as s:
        ann = users.authenticate(s, "ann@example.com", printed.group(1))
        assert ann is not None and ann.must_change_password and ann.name == "Ann"
        root = users.authenticate(s, "root@example.com", "chosen by root")
        assert root is not None and root.is_admin and not root.must_change_password

    listed = mailgateway(config, "agent", "list").stdout.splitlines()
    assert listed == ["ann@example.com\tAnn\tagent\tactive",
                      "root@example.com\troot\tadmin\tactive"]

    mailgateway(config, "agent", "set-password", "ann@example.com", "--password-stdin",
                stdin="ann's own choice\n")
    reset = mailgateway(config, "agent", "set-password", "root@example.com").stdout
    new_root = re.search(r"password: (\S+)", reset)
    assert new_root
    with opened.sessions() as s:
        ann = users.authenticate(s, "ann@example.com", "ann's own choice")
        assert ann is not None and not ann.must_change_password
        assert users.authenticate(s, "root@example.com", "chosen by root") is None
        root = users.authenticate(s, "root@example.com", new_root.group(1))
        assert root is not None and root.must_change_password

    assert "deactivated" in mailgateway(config, "agent", "deactivate", "ann@example.com").stdout
    assert "ann@example.com\tAnn\tagent\tinactive" in mailgateway(config, "agent", "list").stdout
    with opened.sessions() as s:
        assert users.authenticate(s, "ann@example.com", "ann's own choice") is None


def test_agent_commands_refuse_with_one_line(initialised: Path) -> None:
    config = initialised
    mailgateway(config, "agent", "add", "ann@example.com")
    assert "already exists" in one_line_error(
        mailgateway(config, "agent", "add", "ANN@example.com", ok=False))
    assert "at least 10 characters" in one_line_error(
        mailgateway(config, "agent", "add", "bob@example.com", "--password-stdin",
                    stdin="short\n", ok=False))
    assert "no agent" in one_line_error(
        mailgateway(config, "agent", "deactivate", "nobody@example.com", ok=False))
    assert "bob@example.com" not in mailgateway(config, "agent", "list").stdout


def add_conversation(runtime: Runtime) -> int:
    """A ticket with a Cc, an attachment, HTML and an auto-reply, for `ticket show`."""
    with runtime.sessions.begin() as s:
        queue = queue_named(s, "Support")
        first = MessageDraft(
            direction=Direction.INBOUND, dedup_key="<one@customer.example>",
            message_id="<one@customer.example>", from_address="anna@customer.example",
            from_name="Anna", to=["support@example.com"], cc=["bob@customer.example"],
            subject="Printer on fire", text="It burns.\n> older", reply_text="It burns.",
            html="<p>It burns.</p>",
            attachments=[AttachmentDraft("fire.jpg", "image/jpeg", 1234, "b" * 64)])
        ticket, _ = open_ticket(s, first, queue=queue, cc=[("bob@customer.example", "Bob")])
        add_customer_message(s, ticket, MessageDraft(
            direction=Direction.INBOUND, dedup_key="<two@customer.example>",
            message_id="<two@customer.example>", from_address="anna@customer.example",
            subject="Out of office", text="Away.", auto="auto-reply"))
        return ticket.id


def test_ticket_list_and_show_json(initialised: Path, opened: Runtime) -> None:
    ticket_id = add_conversation(opened)
    [listed] = json.loads(mailgateway(initialised, "ticket", "list", "--json").stdout)
    assert set(listed) >= TICKET_KEYS
    assert listed["id"] == ticket_id and listed["subject"] == "Printer on fire"
    assert (listed["status"], listed["priority"], listed["queue"]) == ("new", "normal", "Support")
    assert listed["requester"] == "anna@customer.example" and listed["assignee"] is None
    assert listed["tags"] == [] and listed["message_count"] == 2
    assert listed["created_at"].endswith("Z") and listed["updated_at"].endswith("Z")

    shown = json.loads(mailgateway(initialised, "ticket", "show", str(ticket_id), "--json").stdout)
    assert set(shown) >= TICKET_KEYS and shown["id"] == ticket_id
    assert [(p["address"], p["role"]) for p in shown["participants"]] == [
        ("anna@customer.example", "requester"), ("bob@customer.example", "cc")]
    assert [e["kind"] for e in shown["events"]] == ["created", "auto_message"]
    human, robot = shown["messages"]
    assert set(human) >= MESSAGE_KEYS and set(robot) >= MESSAGE_KEYS
    assert human["message_id"] == "<one@customer.example>" and human["direction"] == "inbound"
    assert human["from"] == "anna@customer.example" and human["to"] == ["support@example.com"]
    assert human["cc"] == ["bob@customer.example"] and human["subject"] == "Printer on fire"
    assert human["text"] == "It burns.\n> older" and human["reply_text"] == "It burns."
    assert human["html"] == "<p>It burns.</p>" and human["auto"] is None
    assert human["date"] is None
    assert [{k: a[k] for k in ("filename", "content_type", "size", "sha256")}
            for a in human["attachments"]] == [
        {"filename": "fire.jpg", "content_type": "image/jpeg", "size": 1234, "sha256": "b" * 64}]
    assert robot["auto"] == "auto-reply" and robot["html"] is None and robot["attachments"] == []

    text = mailgateway(initialised, "ticket", "show", str(ticket_id)).stdout
    assert f"#{ticket_id} Printer on fire" in text and "It burns." in text
    assert "Printer on fire" in mailgateway(initialised, "ticket", "list").stdout


def test_ticket_show_of_a_missing_id_is_one_line(initialised: Path) -> None:
    line = one_line_error(mailgateway(initialised, "ticket", "show", "4242", ok=False))
    assert "no ticket #4242" in line
    line = one_line_error(mailgateway(initialised, "ticket", "show", "4242", "--json", ok=False))
    assert "no ticket #4242" in line


def test_commands_on_an_uninitialised_database_say_so_in_one_line(config: Path) -> None:
    """Regression: `ticket list` before `init` printed a SQLAlchemy traceback."""
    done = mailgateway(config, "ticket", "list", ok=False)
    assert done.returncode == 75  # EX_TEMPFAIL: an MTA piping mail in retries later
    line = one_line_error(done)
    assert line.startswith("mailgateway: database error:") and "mailgateway init" in line


def test_version(tmp_path: Path) -> None:
    done = subprocess.run([str(MAILGATEWAY), "--version"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"mailgateway, version {__version__}"


def test_check_config_prints_a_summary(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///var/check.db",
                          smtp={"port": 2626, "domains": ["help.example"]},
                          queues=[{"name": "Help", "address": "help@help.example",
                                   "default": True}])
    out = mailgateway(config, "check-config").stdout
    assert f"config: {config}" in out
    assert f"database: sqlite:///{tmp_path}/var/check.db" in out
    assert "smtp listener: 127.0.0.1:2626 accepting @help.example" in out
    assert "outbound: directory" in out and "web: http://127.0.0.1:8080/" in out
    assert "queue Help: help@help.example (default)" in out
    assert out.strip().endswith("configuration OK")
    assert not (tmp_path / "var" / "check.db").exists()  # checking touches no database


def test_check_config_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///var/check.db", web={"port": 70000})
    done = mailgateway(config, "check-config", ok=False)
    assert done.returncode == 78
    assert one_line_error(done) == (
        f"mailgateway: {config}: [web] port: 70000 is out of range (0-65535)")


def test_a_plain_wheel_carries_templates_and_migrations(tmp_path: Path) -> None:
    """Runs once, not per database: a non-editable install must find both folders."""
    subprocess.run([str(Path(sys.executable).with_name("pip")), "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    [wheel] = tmp_path.glob("mailgateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mailgateway/_templates/web/base.html",
            "mailgateway/_migrations/versions/0001_create_the_schema.py",
            "mailgateway/_migrations/env.py",
            "mailgateway/cli.py", "models/schema.py", "webui/auth.py"} <= names
