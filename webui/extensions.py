"""Flask extensions and per-request helpers shared by the blueprints."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import abort, current_app, g
from flask_login import LoginManager, current_user, login_required
from flask_wtf import CSRFProtect
from sqlalchemy.orm import Session

from mailgateway.config import Settings
from models import changes, followups
from models.schema import Agent, Ticket

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in."


def service(name: str) -> Any:
    return current_app.extensions["mailgateway"][name]


def settings() -> Settings:
    return service("settings")


def db() -> Session:
    """This request's session, closed at teardown. It reads without taking a lock (on SQLite
    a deferred BEGIN beside the writers, thanks to WAL); `write()` makes it a writer for one
    transaction, so what a page loaded stays usable in the domain operations."""
    if "db" not in g:
        g.db = Session(bind=_engine(read_only=True), expire_on_commit=False)
    return g.db


def _engine(*, read_only: bool = False) -> Any:
    """The gateway's engine; for reading, the same pool with the read_only option that
    models.db turns into a lock-free BEGIN on SQLite."""
    engine = service("sessions").kw["bind"]
    if not read_only:
        return engine
    services = current_app.extensions["mailgateway"]
    if "read_engine" not in services:
        services["read_engine"] = engine.execution_options(read_only=True)
    return services["read_engine"]


@login_manager.user_loader
def load_agent(agent_id: str) -> Agent | None:
    agent = db().get(Agent, int(agent_id)) if agent_id.isdigit() else None
    return agent if agent is not None and agent.active else None


class write:  # noqa: N801  (used as `with write() as session:`)
    """This request's session inside one write transaction: commit on success, roll back on
    error. What the request read before is read again inside it (expired), so a decision
    is never taken on a snapshot older than the write lock."""

    def __enter__(self) -> Session:
        self.session = db()
        self.reading = self.session.bind
        self.session.commit()  # end the read snapshot
        self.session.expire_all()
        self.session.bind = _engine()
        return self.session

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None:
                self.session.commit()
            else:
                self.session.rollback()
        finally:
            self.session.bind = self.reading


def end_reads() -> None:
    """Finish this request's read snapshot before calling code with sessions of its own (a
    retried ingest), so what it committed is seen when the page reads again."""
    db().commit()


def optional_service(name: str) -> Any:
    """A helper the gateway may or may not pass in (the sender's wake-up), else None."""
    return current_app.extensions["mailgateway"].get(name)


def assign_and_notify(session: Session, ticket: Ticket, agent: Agent | None, *, actor: Agent
                      ) -> None:
    """The assignment and the assignee's notice in one transaction ([notifications]
    assigned); without the gateway's follow-up policy (the web app alone) no notice."""
    event = changes.assign(session, ticket, agent, actor=actor)
    policy = optional_service("followup_policy")
    if policy is not None:
        followups.after_assignment(session, ticket, event, actor=actor, policy=policy)


def me() -> Agent:
    """The logged-in agent as a row of this request's session, for domain operations."""
    return current_user._get_current_object()  # noqa: SLF001  (Flask-Login's documented way)


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Admins only, checked on the server for every request: 403 for an agent."""

    @functools.wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def safe_path(target: str | None, fallback: str) -> str:
    """A path on this site or the fallback: a `next` field must not lead to another host."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return fallback


def wake_sender() -> None:
    """Tell the sender new mail is queued (when the gateway passed a wake-up in); without it
    the sender finds the row on its next poll."""
    wake = optional_service("wake_sender")
    if wake is not None:
        wake()

