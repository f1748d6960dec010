"""The inbox: every ticket, newest activity first."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

from models import queries
from webui.extensions import db

bp = Blueprint("inbox", __name__)


@bp.route("/")
@login_required
def index() -> str:
    return render_template("inbox/index.html", tickets=queries.recent_tickets(db(), limit=100))
