"""Log in, log out, and the password change an agent must make when told to."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

from models import users
from models.errors import DomainError
from webui.extensions import db, write
from webui.forms import ActionForm, ChangePasswordForm, LoginForm

bp = Blueprint("auth", __name__)
OPEN_WHILE_PASSWORD_EXPIRED = {"auth.change_password", "auth.logout", "static"}


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    form = LoginForm()
    if form.validate_on_submit():
        agent = users.authenticate(db(), form.email.data or "", form.password.data or "")
        if agent is None:
            flash("Wrong email or password.", "error")
            return render_template("auth/login.html", form=form), 401
        login_user(agent)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    if ActionForm().validate_on_submit():
        logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password() -> str | Response:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        if not check_password_hash(current_user.password_hash, form.current.data or ""):
            form.current.errors.append("That is not your current password.")
        elif form.new.data == form.current.data:
            form.new.errors.append("Choose a password different from the current one.")
        else:
            try:
                with write() as session:
                    users.set_password(session, current_user, form.new.data or "",
                                       must_change=False)
            except DomainError as error:
                form.new.errors.append(str(error))
            else:
                flash("Password changed.", "info")
                return redirect(url_for("inbox.index"))
    return render_template("auth/change_password.html", form=form)


@bp.before_app_request
def force_password_change() -> Response | None:
    if (current_user.is_authenticated and current_user.must_change_password
            and request.endpoint not in OPEN_WHILE_PASSWORD_EXPIRED):
        return redirect(url_for("auth.change_password"))
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: `next` must not send an agent to another host."""
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("inbox.index")
