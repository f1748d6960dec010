"""Raw bytes to a ParsedMail: headers decoded, bodies and attachments pulled out, never a crash.

mail-parser reads the message and decodes its headers; our own walk over the MIME
tree takes the bodies and attachments, because limits (depth, count, size), charset
repair and inline parts are ours to decide. Anything odd becomes a note on the
message, never an exception: a mail that merely looks strange is still a mail.
"""

from __future__ import annotations

import codecs
import email.utils
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as EmailMessage

import mailparser

from mailgateway.classify import header_text
from mailgateway.config import LimitSettings
from mailgateway.errors import MessageRejected
from mailgateway.quoting import reply_text, strip_html_quotes
from mailgateway.sanitize import html_to_text, sanitize_html

log = logging.getLogger(__name__)

MSGID = re.compile(r"<[^<>\s]+>")
HEADER_LINE = re.compile(rb"^(From |[!-9;-~]+[ \t]*:)")
FALLBACK_CHARSETS = ("utf-8", "windows-1252")


class NotAMessage(MessageRejected):
    """The bytes are not an email message at all (no header block)."""


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class ParsedMail:
    message: EmailMessage
    message_id: str | None
    subject: str
    from_address: str
    from_name: str
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    sent_at: datetime | None
    in_reply_to: str | None
    references: list[str]
    text: str
    html: str | None
    reply_text: str
    attachments: list[ParsedAttachment]
    notes: list[str] = field(default_factory=list)

    def header(self, name: str, default: str = "") -> str:
        value = self.message.get(name)
        return default if value is None else header_text(value)

    @property
    def dedup_key(self) -> str:
        """The Message-ID; without one, a hash of what a second delivery keeps the same
        (not the raw bytes: each path adds its own Received lines)."""
        if self.message_id:
            return self.message_id[:998]
        basis = "\n".join([self.from_address, self.header("Date"), self.subject,
                           ",".join(a for _, a in self.to), self.text]).encode("utf-8", "replace")
        return "sha256:" + hashlib.sha256(basis).hexdigest()


def message_ids(value: str) -> list[str]:
    return MSGID.findall(value or "")


def looks_like_message(raw: bytes) -> bool:
    """RFC 5322 starts with a header field (or an mbox "From " line); anything else is not mail."""
    return bool(raw.strip()) and HEADER_LINE.match(raw.lstrip(b"\r\n")) is not None


def parse(raw: bytes, limits: LimitSettings) -> ParsedMail:
    if not looks_like_message(raw):
        raise NotAMessage("not an email message: no header block")
    parsed = mailparser.parse_from_bytes(raw)
    message = parsed.message
    notes: list[str] = []
    parts = Parts(limits, notes)
    parts.walk(message, depth=0)
    text = "\n".join(parts.texts).strip()
    raw_html = "\n".join(parts.htmls) or None
    if not text and raw_html:
        text = html_to_text(raw_html)
    if len(text) > limits.max_text_chars:
        text = text[: limits.max_text_chars]
        notes.append(f"text truncated to {limits.max_text_chars} characters for display; "
                     "the raw message is complete")
    reply = _reply_text(text, raw_html, bool(parts.texts))
    name, address = _sender(message)
    ids = message_ids(header_text(message.get("Message-ID")))
    in_reply_to = message_ids(header_text(message.get("In-Reply-To")))
    return ParsedMail(
        message=message,
        message_id=ids[0] if ids else None,
        subject=" ".join(header_text(message.get("Subject")).split()),
        from_address=address,
        from_name=name,
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        sent_at=_date(message.get("Date")),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=message_ids(header_text(message.get("References"))),
        text=text,
        html=sanitize_html(raw_html) if raw_html else None,
        reply_text=reply,
        attachments=parts.attachments,
        notes=notes,
    )


def _reply_text(text: str, raw_html: str | None, has_plain: bool) -> str:
    """The new text: from the plain part; for HTML-only mail, from HTML without its quotes."""
    if not has_plain and raw_html:
        return reply_text(html_to_text(strip_html_quotes(raw_html))) or reply_text(text)
    return reply_text(text)


def _sender(message: EmailMessage) -> tuple[str, str]:
    for header in ("From", "Sender", "Return-Path"):
        pairs = email.utils.getaddresses([header_text(message.get(header))])
        for name, address in pairs:
            if "@" in address:
                return name.strip(), address.strip().lower()
    return "", ""


def _addresses(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    values = [header_text(v) for v in message.get_all(header, [])]
    return [(n.strip(), a.strip().lower()) for n, a in email.utils.getaddresses(values)
            if "@" in a]


def _date(value: object) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(header_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed if 1970 <= parsed.year <= 2200 else None


class Parts:
    """One walk over the MIME tree, with the configured limits."""

    def __init__(self, limits: LimitSettings, notes: list[str]) -> None:
        self.limits, self.notes = limits, notes
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedAttachment] = []

    def walk(self, part: EmailMessage, depth: int) -> None:
        if depth > self.limits.max_mime_depth:
            self.notes.append(f"MIME nesting deeper than {self.limits.max_mime_depth} levels "
                              "not unpacked; the raw message is complete")
            return
        content_type = part.get_content_type()
        if part.is_multipart():
            for child in part.get_payload() or []:
                if isinstance(child, EmailMessage):
                    self.walk(child, depth + 1)
            return
        disposition = (part.get_content_disposition() or "").lower()
        filename = self._filename(part)
        if content_type == "message/rfc822" or disposition == "attachment" or filename:
            self._attachment(part, content_type, filename, inline=disposition == "inline")
        elif content_type == "text/plain":
            self.texts.append(decode_text(part, self.notes))
        elif content_type == "text/html":
            self.htmls.append(decode_text(part, self.notes))
        elif content_type.startswith("text/") and content_type != "text/calendar":
            self.texts.append(decode_text(part, self.notes))
        else:
            self._attachment(part, content_type, filename,
                             inline=bool(part.get("Content-ID")) or disposition == "inline")

    def _filename(self, part: EmailMessage) -> str:
        try:
            name = part.get_filename()  # RFC 2231 and RFC 2047 names
        except (LookupError, ValueError, UnicodeError):
            name = None
        return header_text(name) if name else ""

    def _attachment(self, part: EmailMessage, content_type: str, filename: str, *,
                    inline: bool) -> None:
        if len(self.attachments) >= self.limits.max_attachments:
            self.notes.append(f"more than {self.limits.max_attachments} attachments: the rest are "
                              "in the raw message only")
            return
        data = _payload(part)
        if len(data) > self.limits.max_attachment_size:
            self.notes.append(f"attachment {filename or content_type} ({len(data)} bytes) is over "
                              "the size limit: kept in the raw message only")
            return
        content_id = header_text(part.get("Content-ID")).strip() or None
        self.attachments.append(ParsedAttachment(
            filename=safe_filename(filename, content_type, part, len(self.attachments) + 1),
            content_type=content_type, data=data, content_id=content_id,
            inline=inline and content_id is not None))


def _payload(part: EmailMessage) -> bytes:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        inner = part.get_payload()
        return inner[0].as_bytes() if inner else b""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, UnicodeError):
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else b""
    return data


def decode_text(part: EmailMessage, notes: list[str]) -> str:
    """A text part as str: the declared charset, else UTF-8, else Windows-1252; never raising."""
    data = _payload(part)
    declared = (part.get_content_charset() or "").strip().lower()
    candidates = [c for c in (declared, *FALLBACK_CHARSETS) if c and _known(c)]
    for charset in candidates:
        try:
            text = data.decode(charset)
        except UnicodeDecodeError:
            continue
        if declared and charset != declared:
            notes.append(f"text declared as {declared} was not; decoded as {charset}")
        return text.replace("\x00", "")
    notes.append("undecodable bytes replaced in a text part")
    return data.decode("utf-8", "replace").replace("\x00", "")


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


def safe_filename(name: str, content_type: str, part: EmailMessage, number: int) -> str:
    """A display name with no path, control characters or emptiness; bytes never use it."""
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "_", name).strip().strip(".") or ""
    if not name:
        if content_type == "message/rfc822":
            inner = part.get_payload()
            subject = header_text(inner[0].get("Subject")) if inner else ""
            name = (re.sub(r"[^\w .-]", "_", subject)[:80].strip() or "forwarded") + ".eml"
        elif content_type == "text/calendar":
            name = "invite.ics"
        else:
            extension = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
                         "application/pdf": ".pdf"}.get(content_type, ".bin")
            name = f"part-{number}{extension}"
    return name[:255]
