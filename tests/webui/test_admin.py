"""Admin pages over HTTP on both databases: the role is checked on the server for every page
and action; agents, the quarantine and the state of mail flow."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import mailboxes, users
from models.inbound import RawReceipt, record_raw, settle
from models.schema import Agent, RawMail, RawState
from models.store import sha256_hex
from tests.webui.conftest import ADMIN, AGENT, PASSWORD, Instance, mail

ADMIN_PAGES = ["/admin/", "/admin/agents", "/admin/quarantine", "/admin/settings"]
ADMIN_ACTIONS = ["/admin/agents", "/admin/agents/1/reset", "/admin/agents/1/deactivate",
                 "/admin/quarantine/1/retry", "/admin/quarantine/1/delete",
                 "/admin/outbox/1/retry"]


def quarantine(instance: Instance, raw: bytes, reason: str) -> int:
    """A received message the gateway could not store, as ingest leaves it."""
    digest = instance.runtime.store.put(raw)
    with instance.runtime.sessions.begin() as session:
        row = record_raw(session, [RawReceipt(sha256_hex(raw), len(raw), "smtp")])[digest]
        settle(row, RawState.QUARANTINED, reason, subject="Stuck mail", sender="x@customer.example")
        return row.id


def test_an_agent_is_refused_every_admin_page_and_action(instance: Instance) -> None:
    agent = instance.client(AGENT)
    for path in ADMIN_PAGES:
        assert agent.raw.get(path).status_code == 403, path
    for path in ADMIN_ACTIONS:
        assert agent.post(path, {"email": "x@example.com"}).status_code == 403, path
    assert 'href="/admin/"' not in agent.page("/").html
    admin = instance.client(ADMIN)
    for path in ADMIN_PAGES:
        admin.page(path)
    assert 'href="/admin/"' in admin.page("/").html


def test_a_new_agent_gets_a_password_shown_once_and_must_change_it(instance: Instance) -> None:
    admin = instance.client(ADMIN)
    answer = admin.post("/admin/agents", {"email": "Dan@Example.com", "name": "Dan"}, status=200)
    password = re.search(r'<code class="password">([^<]+)</code>', answer.get_data(as_text=True))
    assert password
    assert "password" not in admin.page("/admin/agents").html.split("<table")[0].lower()
    dan = instance.app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      dan.get("/login").get_data(as_text=True)).group(1)
    dan.post("/login", data={"csrf_token": token, "email": "dan@example.com",
                             "password": password.group(1)})
    assert dan.get("/").headers["Location"].endswith("/password")
    again = admin.post("/admin/agents", {"email": "dan@example.com"}, status=400)
    assert "already exists" in again.get_data(as_text=True)


def test_reset_password_forces_a_change_and_deactivate_locks_out(instance: Instance) -> None:
    admin = instance.client(ADMIN)
    with instance.runtime.sessions.begin() as session:
        frank = users.add_agent(session, "frank@example.com", name="Frank", password=PASSWORD,
                                must_change_password=False)
        frank_id = frank.id
    instance.client("frank@example.com")  # logs in with the old password
    answer = admin.post(f"/admin/agents/{frank_id}/reset", status=200).get_data(as_text=True)
    assert re.search(r'<code class="password">[^<]{12,}</code>', answer)
    with instance.runtime.sessions() as session:
        assert session.get(Agent, frank_id).must_change_password
    with pytest.raises(AssertionError):
        instance.client("frank@example.com")  # the old password no longer works
    admin.post(f"/admin/agents/{frank_id}/deactivate", status=302)
    with instance.runtime.sessions() as session:
        assert not session.get(Agent, frank_id).active
    with instance.runtime.sessions() as session:
        eve = session.scalar(select(Agent).where(Agent.email == ADMIN))
    admin.post(f"/admin/agents/{eve.id}/deactivate", status=302)
    assert "You cannot deactivate yourself." in admin.page("/admin/agents").html


def test_quarantine_lists_the_reason_and_retries_or_deletes(instance: Instance) -> None:
    fixed = quarantine(instance, mail("Stuck mail", "Let me in."), "store failed: database away")
    broken = quarantine(instance, b"no header block at all", "not an email message")
    admin = instance.client(ADMIN)
    page = admin.page("/admin/quarantine").html
    assert "store failed: database away" in page and "not an email message" in page
    admin.post(f"/admin/quarantine/{fixed}/retry", status=302)
    flash = admin.page("/admin/quarantine").html
    assert re.search(rf"Message #{fixed}: created on ticket #\d+", flash)
    admin.post(f"/admin/quarantine/{broken}/retry", status=302)
    assert f"Message #{broken}: quarantined" in admin.page("/admin/quarantine").html
    admin.post(f"/admin/quarantine/{broken}/delete", status=302)
    with instance.runtime.sessions() as session:
        assert session.get(RawMail, fixed).state == RawState.STORED
        assert session.get(RawMail, broken) is None
    assert admin.post(f"/admin/quarantine/{fixed}/delete").status_code == 409  # not quarantined


def test_mail_flow_shows_mailboxes_and_the_outbox(instance: Instance) -> None:
    with instance.runtime.sessions.begin() as session:
        state = mailboxes.folder_state(session, "support", "INBOX")
        mailboxes.record_connected(session, state, True, mode="idle", folder_messages=42,
                                   holder="gw1:4242")
        mailboxes.record_error(session, state, "AUTHENTICATIONFAILED Invalid credentials")
    page = instance.client(ADMIN).page("/admin/").html
    assert "SMTP 127.0.0.1:" in page and "@example.com" in page
    assert "IMAP support" in page and "AUTHENTICATIONFAILED Invalid credentials" in page
    assert "not connected" in page and "IDLE · 42 in the folder · read by gw1:4242" in page
    assert "Nothing is waiting to go out." in page or "Oldest waiting mail" in page
    settings = instance.client(ADMIN).page("/admin/settings").html
    assert "support@example.com" in settings and "[ACME #123]" in settings
