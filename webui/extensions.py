"""Flask extensions and per-request helpers shared by the blueprints."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from sqlalchemy.orm import Session

from mailgateway.config import Settings
from models.schema import Agent

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in."


def service(name: str) -> Any:
    return current_app.extensions["mailgateway"][name]


def settings() -> Settings:
    return service("settings")


def db() -> Session:
    """This request's database session, closed at teardown; writes use `db().begin()`."""
    if "db" not in g:
        g.db = service("sessions")()
    return g.db


@login_manager.user_loader
def load_agent(agent_id: str) -> Agent | None:
    agent = db().get(Agent, int(agent_id)) if agent_id.isdigit() else None
    return agent if agent is not None and agent.active else None


class write:  # noqa: N801  (used as `with write() as session:`)
    """This request's session inside one transaction: commit on success, roll back on error."""

    def __enter__(self) -> Session:
        self.session = db()
        return self.session

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.session.commit()
        else:
            self.session.rollback()
