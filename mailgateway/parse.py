"""Raw bytes to a ParsedMail: headers decoded, bodies and attachments pulled out, never a crash.

The standard library's parser (the one mail-parser wraps) reads the MIME tree, and our own
walk over it takes the bodies and attachments, because limits (depth, count, size), charset
repair and inline parts are ours to decide. mail-parser's own pass over the tree (every body
decoded, every attachment re-encoded as base64) was thrown away here, and it was 60 % of the
parse (bench/ingest.py); mail-parser remains the bench's yardstick. Anything odd becomes a
note on the message, never an exception: a mail that merely looks strange is still a mail.
"""

from __future__ import annotations

import email
import email.errors
import email.utils
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from functools import cached_property

from mailgateway.charsets import python_codec
from mailgateway.classify import header_decodes, header_text
from mailgateway.config import LimitSettings
from mailgateway.errors import MessageRejected
from mailgateway.feedparser_speedup import install as install_feedparser_speedup
from mailgateway.quoting import reply_text, strip_html_quotes
from mailgateway.sanitize import html_to_text, sanitize_html

log = logging.getLogger(__name__)
install_feedparser_speedup()

MSGID = re.compile(r"<[^<>\s]+>")
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a longer path is not an address
LATIN_LABELS = frozenset({"us-ascii", "ascii", "iso-8859-1", "latin1", "latin-1", "iso-8859-15",
                          "windows-1252", "cp1252"})
HEADER_LINE = re.compile(rb"^(From |[!-9;-~]+[ \t]*:)")
FALLBACK_CHARSETS = ("utf-8", "windows-1252")
DISPLAY_HEADERS = ("From", "Sender", "To", "Cc", "Subject")
ENRICHED = frozenset({"text/enriched", "text/richtext"})  # RFC 1896, 1341: text with markup
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
              "application/pdf": ".pdf", "text/html": ".html", "text/x-amp-html": ".html",
              "text/csv": ".csv", "text/vcard": ".vcf", "text/x-vcard": ".vcf"}


class NotAMessage(MessageRejected):
    """The bytes are not an email message at all (no header block)."""


NOT_A_MESSAGE = "not an email message"  # how its quarantine reason starts, for a re-delivery


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
    reused_id: bool = False  # its Message-ID names another message too: see reuse_id()

    def header(self, name: str, default: str = "") -> str:
        value = self.message.get(name)
        return default if value is None else _text(value)

    @property
    def answered_as(self) -> str | None:
        """The Message-ID replies name this mail by; None when it names another one too."""
        return None if self.reused_id else self.message_id

    @property
    def thread_root(self) -> str | None:
        """The conversation's first Message-ID: References starts with it (RFC 5322 3.6.4,
        and clients that trim References keep it); else the parent, else this message."""
        return (self.references or [self.in_reply_to or self.answered_as])[0]

    @cached_property
    def dedup_key(self) -> str:
        """The Message-ID; without one, a hash of what a second delivery keeps the same
        (not the raw bytes: each path adds its own Received lines). The attachments count:
        a scanner sends each page as a mail of its own with the same text. Their line ends
        are evened out like the text's, since a part not in base64 (an .ics) arrives CRLF
        by SMTP and LF from a Maildir. A reused Message-ID is followed by the hash."""
        if self.message_id and not self.reused_id:
            return self.message_id[:998]
        digests = [hashlib.sha256(a.data.replace(b"\r\n", b"\n")).hexdigest()
                   for a in self.attachments]
        basis = "\n".join([self.from_address, self.header("Date"), self.subject,
                           ",".join(a for _, a in self.to), self.text, *digests])
        content = "sha256:" + hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()
        return f"{self.message_id[:900]} {content}" if self.message_id else content

    def reuse_id(self) -> None:
        """A stored message of another Date holds this Message-ID (a web form that stamps
        every mail alike): this one is told apart by its content from now on."""
        self.reused_id = True
        self.__dict__.pop("dedup_key", None)  # the cached key


def message_ids(value: str) -> list[str]:
    """Every <id> in a header; clipped to the 998 characters a line (and our column) holds."""
    return [found[:998] for found in MSGID.findall(value or "")]


def _text(value: object) -> str:
    """Header text without NUL: PostgreSQL refuses it in text, and no header means one."""
    return header_text(value).replace("\x00", "")


def looks_like_message(raw: bytes) -> bool:
    """RFC 5322 starts with a header field (or an mbox "From " line); anything else is not mail."""
    return bool(raw.strip()) and HEADER_LINE.match(raw.lstrip(b"\r\n")) is not None


def parse(raw: bytes, limits: LimitSettings) -> ParsedMail:
    if not looks_like_message(raw):
        raise NotAMessage(f"{NOT_A_MESSAGE}: no header block")
    notes: list[str] = []
    message = read_message(raw, notes)
    notes.extend(header_notes(raw))
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
    ids = message_ids(_text(message.get("Message-ID")))
    in_reply_to = message_ids(_text(message.get("In-Reply-To")))
    return ParsedMail(
        message=message,
        message_id=ids[0] if ids else None,
        subject=" ".join(_text(message.get("Subject")).split()),
        from_address=address,
        from_name=name,
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        sent_at=_date(message.get("Date")),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=message_ids(_text(message.get("References"))),
        text=text,
        html=sanitize_html(raw_html) if raw_html else None,
        reply_text=reply,
        attachments=parts.attachments,
        notes=notes,
    )


def read_message(raw: bytes, notes: list[str]) -> EmailMessage:
    """The MIME tree (compat32, as the email package and mail-parser read it). Too deep to
    parse at all raises RecursionError: that mail is quarantined."""
    message = email.message_from_bytes(raw)
    if not all(header_decodes(value) for name in DISPLAY_HEADERS
               for value in message.get_all(name, [])):
        notes.append("some headers or parts could not be decoded; shown as far as readable")
    return message


def _reply_text(text: str, raw_html: str | None, has_plain: bool) -> str:
    """The new text: from the plain part; for HTML-only mail, from HTML without its quotes."""
    if not has_plain and raw_html:
        return reply_text(html_to_text(strip_html_quotes(raw_html))) or reply_text(text)
    return reply_text(text)


def header_notes(raw: bytes) -> list[str]:
    """Raw 8-bit header bytes that are not UTF-8 (RFC 6532 allows UTF-8) were read as Latin-1:
    say so, since a name or subject may then look wrong."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    if head.isascii():
        return []
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return ["raw 8-bit bytes in the header that are not UTF-8 were read as Latin-1"]
    return []


def _sender(message: EmailMessage) -> tuple[str, str]:
    for header in ("From", "Sender", "Return-Path"):
        pairs = email.utils.getaddresses([_text(message.get(header))])
        for name, address in pairs:
            if _is_address(address):
                return name.strip(), address.strip().lower()
    return "", ""


def _addresses(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    values = [_text(v) for v in message.get_all(header, [])]
    return [(n.strip(), a.strip().lower()) for n, a in email.utils.getaddresses(values)
            if _is_address(a)]


def _is_address(address: str) -> bool:
    return "@" in address and len(address.strip()) <= MAX_ADDRESS


def _date(value: object) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(header_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed if 1970 <= parsed.year <= 2200 else None


class Parts:
    """One walk over the MIME tree, with the configured limits. Only plain text makes the text
    and HTML the html; any other text/* (a vCard, returned headers, AMP) is an attachment,
    or the agent would read its source as the customer's words."""

    def __init__(self, limits: LimitSettings, notes: list[str],
                 attachments: list[ParsedAttachment] | None = None) -> None:
        self.limits, self.notes = limits, notes
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedAttachment] = [] if attachments is None else attachments

    def walk(self, part: EmailMessage, depth: int) -> None:
        if depth > self.limits.max_mime_depth:
            self.notes.append(f"MIME nesting deeper than {self.limits.max_mime_depth} levels "
                              "not unpacked; the raw message is complete")
            return
        content_type = part.get_content_type()
        if content_type == "message/rfc822":  # a forward: kept whole, as an .eml to open
            self._attachment(part, content_type, self._filename(part), inline=False)
            return
        if part.is_multipart():
            children = [c for c in part.get_payload() or [] if isinstance(c, EmailMessage)]
            if content_type == "multipart/alternative":
                self._alternatives(children, depth + 1)
            else:
                for child in children:
                    self.walk(child, depth + 1)
            return
        if part.get_content_maintype() == "multipart":  # its boundary is missing or never came
            self.notes.append(f"broken MIME structure ({content_type} whose boundary is "
                              "missing or never comes): the text is shown as it came")
            self.texts.append(decode_text(part, self.notes))
            return
        disposition = (part.get_content_disposition() or "").lower()
        filename = self._filename(part)
        if disposition == "attachment" or filename:
            self._attachment(part, content_type, filename, inline=disposition == "inline")
        elif content_type == "text/plain" or content_type in ENRICHED:
            self.texts.append(decode_text(part, self.notes))
        elif content_type == "text/html":
            self.htmls.append(decode_text(part, self.notes))
        else:
            self._attachment(part, content_type, filename,
                             inline=bool(part.get("Content-ID")) or disposition == "inline")

    def _alternatives(self, forms: list[EmailMessage], depth: int) -> None:
        """RFC 2046 5.1.4: one content in several forms, the best last. The text comes from
        the best plain form and the html from the best HTML form; the others would say it
        all again. What a form carries besides (an invite, a related HTML's images) is kept.
        Enriched text is shown as written, so a text/plain form beats it wherever it is."""
        texts: list[str] = []
        htmls: list[str] = []
        for form in forms:
            walked = Parts(self.limits, self.notes, self.attachments)
            walked.walk(form, depth)
            if walked.texts and (not texts or form.get_content_type() not in ENRICHED):
                texts = walked.texts
            htmls = walked.htmls or htmls
        self.texts.extend(texts)
        self.htmls.extend(htmls)

    def _filename(self, part: EmailMessage) -> str:
        try:
            name = part.get_filename()  # RFC 2231 and RFC 2047 names
        except (LookupError, ValueError, UnicodeError):
            name = None
        return _text(name) if name else ""

    def _attachment(self, part: EmailMessage, content_type: str, filename: str, *,
                    inline: bool) -> None:
        if len(self.attachments) >= self.limits.max_attachments:
            note = (f"more than {self.limits.max_attachments} attachments: the rest are in the "
                    "raw message only")
            if note not in self.notes:
                self.notes.append(note)
            return
        data = _payload(part)
        if len(data) > self.limits.max_attachment_size:
            self.notes.append(f"attachment {filename or content_type} ({len(data)} bytes) is over "
                              "the size limit: kept in the raw message only")
            return
        content_id = _text(part.get("Content-ID")).strip()[:998] or None
        self.attachments.append(ParsedAttachment(
            filename=safe_filename(filename, content_type, part, len(self.attachments) + 1),
            content_type=content_type.replace("\x00", "")[:255], data=data,
            content_id=content_id,
            inline=inline and content_id is not None))


def _payload(part: EmailMessage) -> bytes:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        inner = part.get_payload()
        return _forwarded_bytes(inner[0]) if inner else b""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, UnicodeError):
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else b""
    return data


def _forwarded_bytes(inner: EmailMessage) -> bytes:
    """The forwarded message as an .eml; its text form when the email package cannot write
    it back as bytes (a boundary that never comes, around 8-bit text)."""
    try:
        return inner.as_bytes()
    except (UnicodeError, LookupError, ValueError):
        return inner.as_string().encode("utf-8", "replace")


def decode_text(part: EmailMessage, notes: list[str]) -> str:
    """A text part as str: the declared charset, else UTF-8, else Windows-1252; never raising.
    Line ends are LF whatever the path (SMTP and IMAP say CRLF, a Maildir LF), so the text
    and the content hash of a mail without Message-ID are the same on every path."""
    data = _payload(part)
    declared = (part.get_content_charset() or "").strip().lower()
    codec = python_codec(declared)
    candidates = [c for c in (codec, *FALLBACK_CHARSETS) if c]
    if declared in LATIN_LABELS and _utf8_in_disguise(data):
        candidates.insert(0, "utf-8")
    for charset in candidates:
        try:
            text = data.decode(charset)
        except (UnicodeError, LookupError):  # LookupError: "hex" or "rot13" is not for text
            continue
        if declared and charset != codec:
            notes.append(f"text declared as {declared} was not; decoded as {charset}")
        return _clean_text(text)
    notes.append("undecodable bytes replaced in a text part")
    return _clean_text(data.decode("utf-8", "replace"))


def _clean_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\x00", "")


def _utf8_in_disguise(data: bytes) -> bool:
    """Mail labelled Latin-1 whose bytes are valid UTF-8 with non-ASCII in them is UTF-8:
    real Latin-1 text almost never forms valid multi-byte UTF-8 sequences ("Ã¼")."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def safe_filename(name: str, content_type: str, part: EmailMessage, number: int) -> str:
    """A display name with no path, control characters or emptiness; bytes never use it."""
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "_", name).strip().strip(".") or ""
    if not name:
        if content_type == "message/rfc822":
            inner = part.get_payload()
            subject = _text(inner[0].get("Subject")) if inner else ""
            name = (re.sub(r"[^\w .-]", "_", subject)[:80].strip() or "forwarded") + ".eml"
        elif content_type == "text/calendar":
            name = "invite.ics"
        else:
            extension = EXTENSIONS.get(
                content_type, ".txt" if content_type.startswith("text/") else ".bin")
            name = f"part-{number}{extension}"
    return name[:255]
