"""The inbox: views with live counts, filters, search, keyset pages and bulk actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from models import queries
from models.changes import change_status
from models.queries import InboxCounts, InboxFilter
from models.schema import Agent, Queue, Ticket
from webui.extensions import assign_and_notify, db, me, safe_path, settings, write

bp = Blueprint("inbox", __name__)
SORTS = {"updated": "Last activity", "created": "Created", "priority": "Priority"}
CLOSED_STATUSES = ("solved", "closed")
PAGE_SIZE = 50


@dataclass(frozen=True)
class View:
    """A sidebar entry: a named filter and its live count."""

    key: str
    label: str
    count: int
    filter: InboxFilter


def open_statuses() -> tuple[str, ...]:
    return tuple(s for s in settings().tickets.statuses if s not in CLOSED_STATUSES)


def sidebar(counts: InboxCounts, queues: list[Queue], agent_id: int) -> list[View]:
    working = open_statuses()
    views = [
        View("mine", "Mine", counts.mine, InboxFilter(statuses=working, assignee_id=agent_id)),
        View("unassigned", "Unassigned", counts.unassigned,
             InboxFilter(statuses=working, unassigned=True)),
        View("open", "All open", counts.open, InboxFilter(statuses=working)),
    ]
    views += [View(f"queue-{q.id}", q.name, counts.by_queue.get(q.id, 0),
                   InboxFilter(statuses=working, queue_id=q.id)) for q in queues]
    views += [View(f"status-{s}", s.capitalize(), counts.by_status.get(s, 0),
                   InboxFilter(statuses=(s,))) for s in settings().tickets.statuses]
    return views


def requested_filter(args: MultiDict, views: list[View]) -> tuple[str, InboxFilter]:
    """The view the agent picked, narrowed by any filter in the query string."""
    key = args.get("view", "open")
    view = next((v for v in views if v.key == key), views[2])
    flt = view.filter
    status = args.get("status", "")
    if status in settings().tickets.statuses:
        flt = replace(flt, statuses=(status,))
    priority = args.get("priority", "")
    if priority in settings().tickets.priorities:
        flt = replace(flt, priority=priority)
    if args.get("queue", "").isdigit():
        flt = replace(flt, queue_id=int(args["queue"]))
    assignee = args.get("assignee", "")
    if assignee == "none":
        flt = replace(flt, unassigned=True, assignee_id=None)
    elif assignee.isdigit():
        flt = replace(flt, unassigned=False, assignee_id=int(assignee))
    sort = args.get("sort", "updated")
    return view.key, replace(flt, tag=args.get("tag", "").strip() or None,
                             text=args.get("q", "").strip()[:200],
                             sort=sort if sort in SORTS else "updated")


@bp.route("/")
@login_required
def index() -> str:
    session, agent_id = db(), me().id
    queues = _queues()
    counts = queries.inbox_counts(session, agent_id=agent_id, open_statuses=open_statuses())
    views = sidebar(counts, queues, agent_id)
    current, flt = requested_filter(request.args, views)
    page = queries.inbox_page(session, flt, agent_id=agent_id,
                              priorities=settings().tickets.priorities,
                              after=request.args.get("after"), before=request.args.get("before"),
                              limit=PAGE_SIZE)
    template = "inbox/_rows.html" if request.args.get("partial") == "rows" else "inbox/index.html"
    return render_template(
        template, page=page, views=views, view_groups=_grouped(views), current=current,
        flt=flt, sorts=SORTS,
        queues=queues, agents=queries.active_agents(session), tags=queries.all_tags(session),
        statuses=settings().tickets.statuses, priorities=settings().tickets.priorities,
        version=_version(counts),
        args={k: v for k, v in request.args.items() if k not in ("after", "before", "partial")},
    )


@bp.route("/inbox/updates")
@login_required
def updates() -> Response:
    """What the open inbox polls: the sidebar counts and a version that changes with any news."""
    counts = queries.inbox_counts(db(), agent_id=me().id, open_statuses=open_statuses())
    views = sidebar(counts, _queues(), me().id)
    return jsonify(version=_version(counts), counts={v.key: v.count for v in views})


@bp.route("/tickets/bulk", methods=["POST"])
@login_required
def bulk() -> Response:
    """Several tickets at once; one transaction, each change its own Event."""
    ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()][:500]
    action = request.form.get("action", "")
    if not ids or not action:
        flash("Select tickets and an action first.", "error")
        return redirect(safe_path(request.form.get("next"), url_for("inbox.index")))
    with write() as session:
        agent = me()
        apply = _bulk_action(session, action, agent)
        tickets = list(session.scalars(select(Ticket).where(Ticket.id.in_(ids))))
        for ticket in tickets:
            apply(ticket)
    flash(f"{len(tickets)} ticket{'s' if len(tickets) != 1 else ''} updated.", "info")
    return redirect(safe_path(request.form.get("next"), url_for("inbox.index")))


def _bulk_action(session: Session, action: str, agent: Agent) -> Callable[[Ticket], object]:
    kind, _, value = action.partition(":")
    if kind == "assign":
        target = agent if value == "me" else (
            None if value == "none" else session.get(Agent, int(value) if value.isdigit() else 0))
        if value not in ("me", "none") and (target is None or not target.active):
            abort(400)
        return lambda ticket: assign_and_notify(session, ticket, target, actor=agent)
    if kind == "status" and value in settings().tickets.statuses:
        return lambda ticket: change_status(session, ticket, value, actor=agent)
    abort(400)


def _grouped(views: list[View]) -> list[tuple[str, list[View]]]:
    return [("", views[:3]), ("Queues", [v for v in views if v.key.startswith("queue-")]),
            ("Status", [v for v in views if v.key.startswith("status-")])]


def _queues() -> list[Queue]:
    configured = [q.name for q in settings().queues]
    found = {q.name: q for q in db().scalars(select(Queue).where(Queue.name.in_(configured)))}
    return [found[name] for name in configured if name in found]


def _version(counts: InboxCounts) -> str:
    newest = queries.newest_activity(db())
    return f"{counts.version}|{newest.isoformat() if newest else ''}"
