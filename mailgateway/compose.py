"""One outbox row -> one RFC 5322 message, built with EmailMessage and the default policy.

The default policy refuses a header value with CR or LF, so nothing a customer wrote can
add a header; on top of that, subjects and display names are folded to one line (their
text is kept) and an address that is not a plain addr-spec is refused (the mail fails
with the reason instead of going somewhere unintended).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailgateway.config import Settings
from mailgateway.errors import MessageRejected
from mailgateway.reply_token import bounce_address, reply_address
from models.outbox import Kind
from models.schema import Attachment, Message, Outbox
from models.store import BlobStore

MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
ADDR_SPEC = re.compile(r"^[^\s<>@\",;:\\()\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
FILETIME_EPOCH = datetime(1601, 1, 1)


class ComposeError(MessageRejected):
    """The row cannot become a mail (bad address, missing attachment): fails, never retried."""


@dataclass(frozen=True)
class Composed:
    message: EmailMessage
    envelope_from: str  # VERP: names this outbox row, signed
    recipients: list[str]


def templates_dir() -> Path:
    """templates/mail in a checkout, or inside the package of an installed wheel."""
    packaged = Path(__file__).parent / "_templates"
    root = packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "templates"
    return root / "mail"


def mail_templates(folder: Path | None = None) -> Environment:
    """Jinja2 for mail bodies: .html autoescaped, .txt verbatim."""
    return Environment(loader=FileSystemLoader(str(folder or templates_dir())),
                       autoescape=select_autoescape(["html"]), keep_trailing_newline=True)


def compose(row: Outbox, body: Message | None, *, settings: Settings, store: BlobStore,
            templates: Environment, now: datetime | None = None) -> Composed:
    """The mail for an outbox row; `body` is its stored Message (reply, acknowledgement)."""
    ctx = row.context
    mail = EmailMessage()
    mail["Message-ID"] = _msg_id(row.rfc_message_id)
    mail["Date"] = format_datetime(now or datetime.now(UTC))
    mail["From"] = Address(one_line(settings.outbound.from_name), addr_spec=address(
        ctx["from_address"]))
    mail["To"] = [Address(addr_spec=address(a)) for a in ctx["to"]]
    if ctx.get("cc"):
        mail["Cc"] = [Address(addr_spec=address(a)) for a in ctx["cc"]]
    if row.ticket_id and row.kind != Kind.NOTIFICATION:
        mail["Reply-To"] = reply_address(address(ctx["from_address"]), row.ticket_id,
                                         settings.secret_key)
    mail["Subject"] = one_line(ctx["subject"])
    _thread_headers(mail, ctx, row)
    if ctx.get("auto"):
        mail["Auto-Submitted"] = ctx["auto"]  # RFC 3834: robots must not answer
        mail["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office to this
        mail["Precedence"] = "bulk"  # what classic vacation programs still look at
    text, html = _bodies(row, body, templates)
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    for attachment in body.attachments if body else []:
        _attach(mail, attachment, store)
    base = settings.outbound.bounce_address or ctx["from_address"]
    return Composed(mail, bounce_address(address(base), row.id, settings.secret_key),
                    [address(a) for a in row.recipients])


def one_line(text: str) -> str:
    """A header's text folded to one line: CR, LF and runs of blanks become one space."""
    return " ".join((text or "").split())


def address(value: str) -> str:
    """A bare addr-spec, or ComposeError: never pass on something a header could split."""
    value = (value or "").strip()
    if not ADDR_SPEC.match(value):
        raise ComposeError(f"not a deliverable address: {value!r}")
    return value


def _msg_id(value: str) -> str:
    if not MSG_ID.fullmatch(value or ""):
        raise ComposeError(f"not a Message-ID: {value!r}")
    return value


def _thread_headers(mail: EmailMessage, ctx: dict, row: Outbox) -> None:
    """In-Reply-To and References join the customer's thread; Thread-Topic and an extended
    Thread-Index do the same for Outlook, which groups by those instead."""
    parent = ctx.get("in_reply_to") or ""
    if MSG_ID.fullmatch(parent):
        mail["In-Reply-To"] = parent
    references = MSG_ID.findall(ctx.get("references") or "")
    if references:
        mail["References"] = " ".join(references)
    index = ctx.get("parent_thread_index")
    child = extend_thread_index(index, row.created_at, seed=row.rfc_message_id) if index else None
    if child:
        mail["Thread-Topic"] = one_line(ctx.get("thread_topic") or "") or one_line(ctx["subject"])
        mail["Thread-Index"] = child


def extend_thread_index(parent: str, when: datetime, *, seed: str) -> str | None:
    """MS-OXOMSG 2.2.1.3: the parent's index plus one 5-byte response level: 1 bit delta
    code, 31 bits of the time since the header block's FILETIME, 8 random bits (here drawn
    from the Message-ID, so a retried mail carries the same index). None for a malformed
    parent: Outlook then threads by topic, which is better than a broken index."""
    try:
        raw = base64.b64decode("".join(parent.split()), validate=True)
    except ValueError:
        return None
    if len(raw) < 22 or (len(raw) - 22) % 5 or raw[0] != 1:
        return None
    header_time = int.from_bytes(raw[1:6], "big") << 24
    now = int((when.replace(tzinfo=None) - FILETIME_EPOCH).total_seconds() * 10_000_000)
    delta = max(now - header_time, 0)
    # the high 15 bits clear: bits 18..48, delta code 0; else bits 23..53, delta code 1
    small = delta < 1 << 49
    level = (delta >> 18) & 0x7FFFFFFF if small else (1 << 31) | ((delta >> 23) & 0x7FFFFFFF)
    random_byte = hashlib.sha256(seed.encode()).digest()[0]
    return base64.b64encode(raw + level.to_bytes(4, "big") + bytes([random_byte])).decode()


def _bodies(row: Outbox, body: Message | None, templates: Environment) -> tuple[str, str | None]:
    """Text and HTML: an agent's reply is their text, wrapped for HTML; the gateway's own
    mail comes from templates/mail (per queue: queues/<queue>/<name>.txt overrides)."""
    ctx = row.context
    name = ctx["template"]
    values = ctx.get("values", {})
    if name == "reply":
        text = body.text if body else ""
        return text, templates.get_template("reply.html").render(text=text, **values)
    folders = [f"queues/{_slug(ctx.get('queue', ''))}/", ""]
    text = templates.select_template([f"{f}{name}.txt" for f in folders]).render(**values)
    html_names = [f"{f}{name}.html" for f in folders]
    if not any(n in templates.list_templates() for n in html_names):
        return text, None
    return text, templates.select_template(html_names).render(**values)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "default"


def _attach(mail: EmailMessage, attachment: Attachment, store: BlobStore) -> None:
    try:
        data = store.get(attachment.sha256)
    except (OSError, ValueError) as error:
        raise ComposeError(f"attachment {attachment.filename!r} is missing: {error}") from None
    maintype, _, subtype = (attachment.content_type or "").lower().partition("/")
    if not (re.fullmatch(r"[a-z0-9.+-]+", maintype) and re.fullmatch(r"[a-z0-9.+-]+", subtype)):
        maintype, subtype = "application", "octet-stream"
    filename = one_line(attachment.filename).replace("/", "_").replace("\\", "_") or "attachment"
    cid = attachment.content_id if attachment.inline and attachment.content_id else None
    mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename,
                        disposition="inline" if cid else "attachment",
                        cid=f"<{cid.strip('<>')}>" if cid else None)
