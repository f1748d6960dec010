"""What came in the mail, served so that none of it can act in the agent's page.

HTML mail: its own document, framed by the ticket page in a sandbox without scripts, with a
CSP that allows no script, no connection and, until the agent asks, no remote image.
Attachments and raw source: always downloads (Content-Disposition: attachment, nosniff),
except raster images, which are shown in place. Bytes come from the blob store by sha256.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Blueprint, abort, request, url_for
from flask_login import login_required
from werkzeug.wrappers import Response

from mailgateway.sanitize import block_remote_images
from models.schema import Attachment, Message, RawMail
from webui.extensions import db, service
from webui.ticket_view import is_inline_image

bp = Blueprint("content", __name__)

_FRAME_POLICY = ("default-src 'none'; img-src 'self' data:{remote}; style-src 'unsafe-inline'; "
                 "form-action 'none'; frame-ancestors 'self'; "
                 "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox")
_DOWNLOAD_POLICY = "default-src 'none'; sandbox"
_FRAME_STYLE = ("body{font:14px/1.45 system-ui,sans-serif;color:#1d2330;margin:8px;"
                "overflow-wrap:anywhere}img{max-width:100%;height:auto}")
# block_remote_images keeps each blocked URL in data-remote-src(set); the frame needs none of
# them (the agent's "show images" reloads it from the stored HTML), so no URL is left to leak.
_REMOTE_KEPT = re.compile(r'\sdata-remote-srcset="[^"]*"|\sdata-remote-src="[^"]*"')
_CID_SOURCE = re.compile(r'(src\s*=\s*")cid:([^"]+)(")', re.IGNORECASE)
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_FALLBACK_NAME = re.compile(r"[^A-Za-z0-9._ ()-]+")


@bp.route("/messages/<int:message_id>/html")
@login_required
def html(message_id: int) -> Response:
    """The sanitized HTML as a document of its own; ?images=1 when the agent asked for them."""
    message = _get(Message, message_id)
    if not message.html:
        abort(404)
    remote = request.args.get("images") == "1"
    body = message.html if remote else _REMOTE_KEPT.sub("", block_remote_images(message.html)[0])
    body = _link_inline_images(body, message)
    document = (f'<!doctype html><html><head><meta charset="utf-8"><base target="_blank">'
                f"<style>{_FRAME_STYLE}</style></head><body>{body}</body></html>")
    response = Response(document, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _FRAME_POLICY.format(
        remote=" https: http:" if remote else "")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/attachments/<int:attachment_id>")
@login_required
def download(attachment_id: int) -> Response:
    attachment = _get(Attachment, attachment_id)
    media_type = attachment.content_type.lower()
    return _bytes(attachment.sha256, media_type if _MEDIA_TYPE.match(media_type)
                  else "application/octet-stream", attachment.filename)


@bp.route("/attachments/<int:attachment_id>/inline")
@login_required
def inline(attachment_id: int) -> Response:
    """A raster image shown in place (never SVG, which can carry script)."""
    attachment = _get(Attachment, attachment_id)
    if not is_inline_image(attachment):
        abort(404)
    return _bytes(attachment.sha256, attachment.content_type.lower(), attachment.filename,
                  disposition="inline")


@bp.route("/messages/<int:message_id>/raw")
@login_required
def raw(message_id: int) -> Response:
    """The message exactly as received, for a closer look or to hand to someone else."""
    message = _get(Message, message_id)
    if message.raw_id is None:
        abort(404)
    return _bytes(_get(RawMail, message.raw_id).sha256, "message/rfc822",
                  f"message-{message.id}.eml")


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback name for old clients and the UTF-8 name in filename*."""
    fallback = _FALLBACK_NAME.sub("_", filename).strip(" .") or "attachment"
    return (f'{disposition}; filename="{fallback}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}")


def _bytes(sha256: str, media_type: str, filename: str, *, disposition: str = "attachment"
           ) -> Response:
    try:
        data = service("store").get(sha256)
    except FileNotFoundError:
        abort(404)
    response = Response(data, mimetype=media_type)
    response.headers["Content-Disposition"] = content_disposition(filename, disposition)
    response.headers["Content-Security-Policy"] = _DOWNLOAD_POLICY
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


def _link_inline_images(body: str, message: Message) -> str:
    """cid: references point at the message's own attachments, served by inline()."""
    by_cid = {a.content_id.strip("<> ").lower(): a for a in message.attachments
              if a.content_id and is_inline_image(a)}

    def link(match: re.Match[str]) -> str:
        attachment = by_cid.get(match[2].strip("<> ").lower())
        if attachment is None:
            return f"{match[1]}{match[3]}"
        return f"{match[1]}{url_for('content.inline', attachment_id=attachment.id)}{match[3]}"

    return _CID_SOURCE.sub(link, body)


def _get(model: type, row_id: int):  # type: ignore[no-untyped-def]
    row = db().get(model, row_id)
    if row is None:
        abort(404)
    return row
