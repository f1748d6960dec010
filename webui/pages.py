"""What every page shares: time and size formats, and the error pages each domain error maps to."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from models.errors import Conflict, DomainError, Forbidden, NotFound
from models.schema import utcnow

STATUS_OF = {NotFound: 404, Forbidden: 403, Conflict: 409}


def ago(moment: datetime | None) -> str:
    """"4 min", "3 h", "2 d": how long since the last activity, at a glance."""
    if moment is None:
        return ""
    seconds = max(0, int((utcnow() - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return "now"


def when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else ""


def filesize(size: int) -> str:
    for unit, scale in (("MB", 1_048_576), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def register_pages(app: Flask) -> None:
    app.add_template_filter(ago)
    app.add_template_filter(when)
    app.add_template_filter(filesize)

    @app.errorhandler(DomainError)
    def domain_error(error: DomainError) -> tuple[str, int]:
        status = next((code for kind, code in STATUS_OF.items() if isinstance(error, kind)), 400)
        return render_template("error.html", status=status, message=str(error)), status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[str, int]:
        return render_template("error.html", status=error.code,
                               message=error.description), error.code or 500
