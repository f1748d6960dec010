"""Agents on both databases: hashed passwords, authentication, resets, deactivation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailgateway.runtime import Runtime
from models import users
from models.errors import Conflict, NotFound
from models.schema import Agent

PASSWORD = "correct horse battery"


def test_add_agent_stores_a_hash_not_the_password(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        users.add_agent(s, " Ada@Example.com ", name="", admin=True, password=PASSWORD,
                        must_change_password=True)
        users.add_agent(s, "bob@example.com", name="Bob", password=PASSWORD,
                        must_change_password=False)

    with runtime.sessions() as s:
        ada = users.get_agent(s, "ADA@example.com")
        assert ada.email == "ada@example.com" and ada.name == "ada"  # no stray blank
        assert ada.is_admin and ada.must_change_password and ada.active
        assert PASSWORD not in ada.password_hash and ada.password_hash.startswith(("scrypt:",
                                                                                  "pbkdf2:"))
        bob = users.get_agent(s, "bob@example.com")
        assert not bob.is_admin and not bob.must_change_password
        assert bob.password_hash != ada.password_hash  # salted
        assert [a.email for a in users.list_agents(s)] == ["ada@example.com", "bob@example.com"]


def test_add_agent_refuses_a_duplicate_and_a_short_password(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        users.add_agent(s, "ada@example.com", password=PASSWORD, must_change_password=False)
        with pytest.raises(Conflict, match="already exists"):
            users.add_agent(s, "ADA@example.com", password=PASSWORD, must_change_password=False)
        with pytest.raises(Conflict, match="at least 10 characters"):
            users.add_agent(s, "short@example.com", password="123456789",
                            must_change_password=False)
    with runtime.sessions() as s:
        assert [a.email for a in s.scalars(select(Agent))] == ["ada@example.com"]


def test_authenticate(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        users.add_agent(s, "ada@example.com", password=PASSWORD, must_change_password=False)
        users.add_agent(s, "gone@example.com", password=PASSWORD, must_change_password=False)
        users.deactivate(s, users.get_agent(s, "gone@example.com"))

    with runtime.sessions() as s:
        found = users.authenticate(s, "Ada@Example.com", PASSWORD)
        assert found is not None and found.email == "ada@example.com"
        assert users.authenticate(s, "ada@example.com", PASSWORD + "x") is None
        assert users.authenticate(s, "ada@example.com", "") is None
        assert users.authenticate(s, "gone@example.com", PASSWORD) is None
        assert users.authenticate(s, "nobody@example.com", PASSWORD) is None
        assert not users.get_agent(s, "gone@example.com").is_active


def test_set_password_replaces_the_old_one(runtime: Runtime) -> None:
    with runtime.sessions.begin() as s:
        ada = users.add_agent(s, "ada@example.com", password=PASSWORD, must_change_password=True)
        users.set_password(s, ada, "a brand new secret", must_change=False)

    with runtime.sessions.begin() as s:
        assert users.authenticate(s, "ada@example.com", PASSWORD) is None
        ada = users.authenticate(s, "ada@example.com", "a brand new secret")
        assert ada is not None and not ada.must_change_password
        old_hash = ada.password_hash
        with pytest.raises(Conflict, match="at least 10 characters"):
            users.set_password(s, ada, "short", must_change=False)
        assert ada.password_hash == old_hash
        users.set_password(s, ada, "reset by an admin", must_change=True)

    with runtime.sessions() as s:
        ada = users.authenticate(s, "ada@example.com", "reset by an admin")
        assert ada is not None and ada.must_change_password


def test_get_agent_of_an_unknown_email_is_not_found(runtime: Runtime) -> None:
    with runtime.sessions() as s, pytest.raises(NotFound, match="no agent nobody@example.com"):
        users.get_agent(s, "nobody@example.com")
