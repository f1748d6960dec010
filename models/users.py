"""Agents: accounts with hashed passwords and a role; the web UI and CLI manage them here."""

from __future__ import annotations

import functools
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from models.errors import Conflict, NotFound
from models.schema import Agent, Role

MIN_PASSWORD_LENGTH = 10


def random_password() -> str:
    return secrets.token_urlsafe(12)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Conflict(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def find_agent(session: Session, email: str) -> Agent | None:
    return session.scalar(select(Agent).where(Agent.email == email.strip().lower()))


def get_agent(session: Session, email: str) -> Agent:
    agent = find_agent(session, email)
    if agent is None:
        raise NotFound(f"no agent {email}")
    return agent


def add_agent(
    session: Session, email: str, *, name: str = "", admin: bool = False,
    password: str, must_change_password: bool,
) -> Agent:
    if find_agent(session, email):
        raise Conflict(f"an agent {email} already exists")
    check_password_strength(password)
    email = email.strip().lower()
    agent = Agent(
        email=email, name=name or email.split("@")[0],
        password_hash=generate_password_hash(password),
        role=Role.ADMIN if admin else Role.AGENT, must_change_password=must_change_password,
    )
    session.add(agent)
    session.flush()
    return agent


def set_password(session: Session, agent: Agent, password: str, *, must_change: bool) -> None:
    check_password_strength(password)
    agent.password_hash = generate_password_hash(password)
    agent.must_change_password = must_change


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The active agent with this email and password, or None (same answer for every fault)."""
    agent = find_agent(session, email)
    if agent is None or not agent.active:
        check_password_hash(_dummy_hash(), password)  # same time whether the agent exists or not
        return None
    return agent if check_password_hash(agent.password_hash, password) else None


def deactivate(session: Session, agent: Agent) -> None:
    agent.active = False


def list_agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).order_by(Agent.email)))


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("not-a-password")
