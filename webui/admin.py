"""Admin pages: agents, the quarantine, whether mail flows, and the configuration (read-only).

Every view is admin_required: the role is checked on the server for each request, so an
agent who types the address gets 403, not a hidden button.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from models import inbound, mailboxes, outbox, queries, users
from models.errors import DomainError, NotFound
from models.schema import Agent
from webui.extensions import (
    admin_required,
    db,
    end_reads,
    me,
    optional_service,
    settings,
    wake_sender,
    write,
)
from webui.forms import AgentForm

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/")
@admin_required
def mail() -> str:
    """At a glance: is mail coming in (SMTP, each IMAP mailbox) and going out (the outbox)?"""
    session = db()
    states = mailboxes.account_states(session)
    return render_template(
        "admin/mail.html", settings=settings(),
        mailboxes=[(account, states.get(account.name)) for account in settings().imap],
        counts=queries.outbox_counts(session), oldest=queries.oldest_waiting(session),
        failed=queries.failed_outbox(session), quarantined=len(inbound.quarantined(session)))


@bp.route("/outbox/<int:outbox_id>/retry", methods=["POST"])
@admin_required
def retry_outbox(outbox_id: int) -> Response:
    with write() as session:
        outbox.retry(session, outbox_id)
    wake_sender()
    flash(f"Outgoing mail #{outbox_id} is queued again.", "info")
    return redirect(url_for("admin.mail"))


@bp.route("/quarantine")
@admin_required
def quarantine() -> str:
    return render_template("admin/quarantine.html", rows=inbound.quarantined(db()))


@bp.route("/quarantine/<int:raw_id>/retry", methods=["POST"])
@admin_required
def retry_quarantined(raw_id: int) -> Response:
    """The message runs through ingest again (after a fix), as the gateway itself would."""
    retry = optional_service("retry_quarantined")
    if retry is None:
        flash("Retrying needs the gateway: run the web inbox with `mailgateway run`.", "error")
    else:
        end_reads()
        result = retry(raw_id)
        where = f" on ticket #{result.ticket}" if result.ticket else ""
        flash(f"Message #{raw_id}: {result.action}{where}. {result.reason}".strip(), "info")
    return redirect(url_for("admin.quarantine"))


@bp.route("/quarantine/<int:raw_id>/delete", methods=["POST"])
@admin_required
def delete_quarantined(raw_id: int) -> Response:
    with write() as session:
        inbound.delete_quarantined(session, raw_id)
    flash(f"Message #{raw_id} deleted from the quarantine.", "info")
    return redirect(url_for("admin.quarantine"))


@bp.route("/agents", methods=["GET", "POST"])
@admin_required
def agents() -> str | tuple[str, int]:
    form, password = AgentForm(), None
    if form.validate_on_submit():
        password = users.random_password()
        try:
            with write() as session:
                users.add_agent(session, form.email.data or "", name=form.name.data or "",
                                admin=form.admin.data, password=password,
                                must_change_password=True)
        except DomainError as error:
            form.email.errors = [str(error)]
            password = None
    return _agents_page(form, password, added=form.email.data if password else None)


@bp.route("/agents/<int:agent_id>/reset", methods=["POST"])
@admin_required
def reset_password(agent_id: int) -> str | tuple[str, int]:
    """A new random password, shown once to the admin; the agent must change it at login."""
    password = users.random_password()
    with write() as session:
        agent = _agent(agent_id)
        users.set_password(session, agent, password, must_change=True)
    return _agents_page(AgentForm(formdata=None), password, added=agent.email)


@bp.route("/agents/<int:agent_id>/deactivate", methods=["POST"])
@admin_required
def deactivate(agent_id: int) -> Response:
    if agent_id == me().id:
        flash("You cannot deactivate yourself.", "error")
        return redirect(url_for("admin.agents"))
    with write() as session:
        agent = _agent(agent_id)
        users.deactivate(session, agent)
    flash(f"{agent.email} can no longer log in.", "info")
    return redirect(url_for("admin.agents"))


@bp.route("/settings")
@admin_required
def configuration() -> str:
    return render_template("admin/settings.html", settings=settings())


def _agents_page(form: AgentForm, password: str | None, *, added: str | None
                 ) -> tuple[str, int]:
    return render_template("admin/agents.html", form=form, password=password, added=added,
                           rows=users.list_agents(db())
                           ), 400 if form.errors else 200


def _agent(agent_id: int) -> Agent:
    agent = db().get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent #{agent_id}")
    return agent
