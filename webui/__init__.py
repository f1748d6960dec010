"""The agents' web inbox: a Flask application factory, no app at import time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask, g
from sqlalchemy.orm import Session, sessionmaker

from mailgateway.config import Settings
from webui.extensions import csrf, login_manager
from webui.pages import register_pages


def templates_dir() -> Path:
    """templates/ in a checkout, or inside the package of an installed wheel."""
    import mailgateway

    packaged = Path(mailgateway.__file__).parent / "_templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "templates"


def create_app(settings: Settings, sessions: sessionmaker[Session], **services: object) -> Flask:
    """The web app; `services` carries the gateway's helpers (blob store, outbox wake-up)."""
    from webui import admin, auth, composer, content, inbox, tickets

    app = Flask(__name__, template_folder=str(templates_dir() / "web"),
                static_folder=str(Path(__file__).parent / "static"))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead: an open composer must not expire
        MAX_CONTENT_LENGTH=settings.smtp.max_message_size,
    )
    app.extensions["mailgateway"] = {"settings": settings, "sessions": sessions, **services}
    csrf.init_app(app)
    login_manager.init_app(app)
    for blueprint in (auth.bp, inbox.bp, tickets.bp, composer.bp, content.bp, admin.bp):
        app.register_blueprint(blueprint)
    register_pages(app)

    @app.teardown_appcontext
    def close_session(_error: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    @app.after_request
    def security_headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'",
        )
        return response

    return app
