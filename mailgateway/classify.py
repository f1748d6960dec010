"""Recognise mail sent by robots, and read the delivery status notifications among them.

classify() runs on every inbound message, bulk imports included, so its rules look at headers
only. delivery_report() walks the body, and only of a message that is a bounce.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, message_from_string
from email.errors import HeaderParseError
from email.header import Header, decode_header
from email.message import Message
from email.utils import collapse_rfc2231_value, getaddresses

from mailgateway.charsets import python_codec

# decode_header raises HeaderParseError on broken base64; odd charsets raise LookupError.
_HEADER_ERRORS = (HeaderParseError, LookupError, UnicodeError, ValueError, TypeError)
SURROGATE = re.compile("[\udc80-\udcff]")  # a raw 8-bit byte, as compat32 keeps it


@dataclass(frozen=True)
class Verdict:
    auto: str | None  # None for a human; "auto-reply", "bounce", "list", "bulk", "auto-generated"
    reason: str


@dataclass(frozen=True)
class DeliveryReport:
    action: str  # RFC 3464 §2.3.3: failed, delayed, delivered, relayed, expanded
    status: str  # RFC 3463 class.subject.detail, e.g. "5.1.1"
    recipient: str | None
    diagnostic: str
    original_message_id: str | None  # with <>
    permanent: bool  # status class 5


Rule = Callable[[Message], Verdict | None]

HUMAN = Verdict(None, "no robot markers in the headers")


# --- header access: never raises --------------------------------------------------------------


def header_text(value: object) -> str:
    """One line of text from a header value: str, email.header.Header, RFC 2047 encoded words
    or raw 8-bit (compat32 hands that over as a Header in charset unknown-8bit). Never raises:
    a robot's malformed header must not turn into a quarantined message."""
    return _decoded(value)[0]


def header_decodes(value: object) -> bool:
    """False for a value with an encoded word that cannot be read (a cut base64 word): it
    is then shown as written, and the message should say so."""
    return _decoded(value)[1]


def _decoded(value: object) -> tuple[str, bool]:
    if value is None:
        return "", True
    text = str(value)
    try:
        if isinstance(value, Header):
            text = "".join(_chunk_text(part, charset) for part, charset in decode_header(value))
        text = _unsurrogate(text)
        if "=?" in text:  # RFC 2047 words, possibly next to raw 8-bit
            text = "".join(_chunk_text(part, charset) for part, charset in decode_header(text))
    except _HEADER_ERRORS:
        return " ".join(text.split()), False
    return " ".join(text.split()), True


def _chunk_text(part: bytes | str, charset: str | None) -> str:
    if isinstance(part, str):
        return part
    if charset is None:  # decode_header's own encoding of the unencoded stretches
        return part.decode("raw-unicode-escape")
    return _bytes_text(part, charset)


def _bytes_text(data: bytes, charset: str | None) -> str:
    """Declared charset, then UTF-8, then Latin-1, which cannot fail."""
    for candidate in (python_codec(charset), "utf-8"):
        if candidate:
            try:
                return data.decode(candidate)
            except (LookupError, ValueError):  # LookupError: "hex" is no text codec
                continue
    return data.decode("latin-1")


def _unsurrogate(text: str) -> str:
    """Raw 8-bit bytes kept as surrogate escapes become real characters."""
    if text.isascii() or not SURROGATE.search(text):
        return text
    return _bytes_text(text.encode("utf-8", "surrogateescape"), None)


def _header(msg: Message, name: str) -> str:
    values = _headers(msg, name)
    return values[0] if values else ""


def _headers(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
    except _HEADER_ERRORS:
        return []
    return [header_text(value) for value in values]


def _param(msg: Message, name: str) -> str:
    value = msg.get_param(name)  # a tuple when RFC 2231-encoded
    return header_text(collapse_rfc2231_value(value)) if value else ""


# --- rule 1: delivery status notifications and read receipts ----------------------------------

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})
_FAILURE_SUBJECTS = (
    "undelivered mail returned to sender",  # Postfix
    "delivery status notification (failure)",  # Gmail
    "mail delivery failed",  # Exim
    "undeliverable:",  # Exchange
    "failure notice",  # qmail
    "returned mail:",  # Sendmail
    "delivery failure",
    "could not be delivered",
)


def _is_dsn(msg: Message) -> bool:
    return (
        msg.get_content_type() == "multipart/report"
        and _param(msg, "report-type").lower() == "delivery-status"
    )


def _daemon_sender(msg: Message) -> str | None:
    """The From/Sender address whose localpart is MAILER-DAEMON or postmaster, if any."""
    for name in ("From", "Sender"):
        for _, address in getaddresses(_headers(msg, name)):
            localpart = address.rpartition("@")[0] or address
            if localpart.lower().replace("_", "-") in _DAEMON_LOCALPARTS:
                return f"{name}: {address}"
    return None


def _failure_subject(msg: Message) -> str | None:
    subject = _header(msg, "Subject")
    lowered = subject.lower()
    return subject if any(marker in lowered for marker in _FAILURE_SUBJECTS) else None


def is_delivery_status_report(msg: Message) -> Verdict | None:
    """RFC 3464 §2 and RFC 6522: a DSN is multipart/report; report-type=delivery-status.
    Checked first: a bounce often quotes the original's Auto-Submitted or List-Id."""
    return Verdict("bounce", "multipart/report delivery-status") if _is_dsn(msg) else None


def is_read_receipt(msg: Message) -> Verdict | None:
    """RFC 8098 §3: a read receipt (MDN) is multipart/report; report-type=disposition-notification,
    however Outlook and Thunderbird word its subject ("Read:", "Gelesen:", "Return Receipt").
    The reader's client sends it without Auto-Submitted, and a receipt is no answer: it must not
    reopen the ticket. A subject alone is not enough: "Read: my notes" is a person writing."""
    if (
        msg.get_content_type() == "multipart/report"
        and _param(msg, "report-type").lower() == "disposition-notification"
    ):
        return Verdict("auto-generated", "read receipt: multipart/report disposition-notification")
    return None


def is_mailer_daemon_failure(msg: Message) -> Verdict | None:
    """Pre-RFC 3464 bounces (qmail, old Exchange) are plain text from MAILER-DAEMON or the
    postmaster (RFC 5321 §4.5.1). The sender alone is not enough: a postmaster is a person too.
    The subject first: it rules out almost every mail without parsing an address."""
    subject = _failure_subject(msg)
    sender = _daemon_sender(msg) if subject else None
    return Verdict("bounce", f"{sender} with subject {subject!r}") if sender else None


def is_null_sender_failure(msg: Message) -> Verdict | None:
    """RFC 5321 §4.5.5: notifications travel with the null reverse-path, recorded as
    Return-Path: <> (§4.4); with a failure subject that is a bounce from any sender name."""
    if _header(msg, "Return-Path").replace(" ", "") != "<>":
        return None
    subject = _failure_subject(msg)
    return Verdict("bounce", f"Return-Path: <> with subject {subject!r}") if subject else None


# --- rules 2-6: robots by header --------------------------------------------------------------


def is_auto_submitted(msg: Message) -> Verdict | None:
    """RFC 3834 §5: anything but "no" is a robot; parameters after ";" do not matter.
    An empty value is read as a robot too: unsure means robot, a missed ack beats a loop."""
    for value in _headers(msg, "Auto-Submitted"):
        keyword = value.split(";")[0].strip().lower()
        if keyword == "auto-replied":
            return Verdict("auto-reply", f"Auto-Submitted: {keyword}")
        if keyword != "no":
            return Verdict("auto-generated", f"Auto-Submitted: {keyword or '(empty)'}")
    return None


_AUTORESPONDER_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_SUPPRESS_MEANS_AUTO = frozenset({"all", "oof", "autoreply"})


def is_autoresponder(msg: Message) -> Verdict | None:
    """Vacation programs that predate RFC 3834 mark themselves with X-Autoreply & co.
    X-Auto-Response-Suppress ([MS-OXCMAIL] §2.1.3.2.20) asks other robots not to answer;
    Exchange sets All on its own automatic replies, and All/OOF/AutoReply is only ever asked
    by a robot. DR/RN alone is a person's "no receipts, please"."""
    for name in _AUTORESPONDER_HEADERS:
        if name in msg:
            return Verdict("auto-reply", f"{name}: {_header(msg, name) or '(empty)'}")
    for value in _headers(msg, "X-Auto-Response-Suppress"):
        tokens = {token.strip().lower() for token in value.split(",")}
        if tokens & _SUPPRESS_MEANS_AUTO:
            return Verdict("auto-reply", f"X-Auto-Response-Suppress: {value}")
    return None


def is_precedence_auto_reply(msg: Message) -> Verdict | None:
    """Vacation programs that predate RFC 3834 write Precedence: auto_reply (RFC 2076 §3.9 left
    the field's values open), some as X-Precedence."""
    for name in ("Precedence", "X-Precedence"):
        if _header(msg, name).lower() == "auto_reply":
            return Verdict("auto-reply", f"{name}: auto_reply")
    return None


def is_precedence_bulk_or_list(msg: Message) -> Verdict | None:
    """RFC 2076 §3.9 Precedence, not standard but what RFC 3834 §2 tells responders to honour:
    bulk and junk are newsletters, list is a mailing list."""
    value = _header(msg, "Precedence").lower()
    if value in {"bulk", "junk"}:
        return Verdict("bulk", f"Precedence: {value}")
    if value == "list":
        return Verdict("list", "Precedence: list")
    return None


def is_list_post(msg: Message) -> Verdict | None:
    """RFC 2919 List-Id marks a list post (a List-Unsubscribe from RFC 2369 comes with it);
    X-Mailing-List is the older spelling. List-Unsubscribe alone is not enough: one-to-one
    mail sent through a CRM carries it too."""
    for name in ("List-Id", "X-Mailing-List"):
        if name in msg:
            return Verdict("list", f"{name}: {_header(msg, name)}")
    return None


def is_looped_ticket_system(msg: Message) -> Verdict | None:
    """X-Loop is what procmail, RT and OTRS stamp on the mail they send, so that two ticket
    systems do not open tickets on each other forever."""
    if "X-Loop" in msg:
        return Verdict("auto-generated", f"X-Loop: {_header(msg, 'X-Loop')}")
    return None


RULES: tuple[Rule, ...] = (
    is_delivery_status_report,
    is_read_receipt,
    is_mailer_daemon_failure,
    is_null_sender_failure,
    is_auto_submitted,
    is_autoresponder,
    is_precedence_auto_reply,
    is_precedence_bulk_or_list,
    is_list_post,
    is_looped_ticket_system,
)


def classify(msg: Message) -> Verdict:
    """The first rule that recognises a robot; a human otherwise. Headers only, never the
    subject alone: a person may well ask "Out of office?"."""
    for rule in RULES:
        verdict = rule(msg)
        if verdict is not None:
            return verdict
    return HUMAN


# --- delivery reports ---------------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")
_ADDRESS = r"[^\s<>()\[\]@,;:\"']+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_ADDRESS_LINE = re.compile(rf"^[ \t]*<?({_ADDRESS})>?(?=[\s:.(]|$)", re.MULTILINE)
_RCPT_TO = re.compile(rf"RCPT TO:\s*<({_ADDRESS})>", re.IGNORECASE)
_MESSAGE_ID_LINE = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}.*(copy of the message|original message|unsent message|message follows)",
    re.IGNORECASE | re.MULTILINE,
)
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_ACTION_BY_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}
_STATUS_BY_ACTION = {"failed": "5.0.0", "delayed": "4.0.0"}
# RFC 3463 §3, the codes bounces mostly carry; otherwise the subject's name.
_STATUS_TEXT = {
    "1.1": "Bad destination mailbox address",
    "1.2": "Bad destination system address",
    "1.10": "Recipient address has null MX",
    "2.1": "Mailbox disabled, not accepting messages",
    "2.2": "Mailbox full",
    "3.4": "Message too big for system",
    "4.1": "No answer from host",
    "4.2": "Bad connection",
    "4.4": "Unable to route",
    "4.7": "Delivery time expired",
    "7.1": "Delivery not authorized, message refused",
}
_SUBJECT_TEXT = {
    "1": "Addressing status",
    "2": "Mailbox status",
    "3": "Mail system status",
    "4": "Network and routing status",
    "5": "Mail delivery protocol status",
    "6": "Message content or media status",
    "7": "Security or policy status",
}


def delivery_report(msg: Message) -> DeliveryReport | None:
    """RFC 3464 multipart/report; report-type=delivery-status -> the first failed recipient
    (the first recipient if none failed). Also a best effort for non-standard bounces from a
    mailer-daemon (qmail's "Hi. This is the qmail-send program", Exchange NDRs), taking the
    original Message-ID when the bounce carries it. None if not a bounce."""
    if _is_dsn(msg):
        report = _from_status_fields(msg)
        if report is not None:
            return report
    elif not (is_mailer_daemon_failure(msg) or is_null_sender_failure(msg)):
        return None
    return _from_free_text(msg)


def _from_status_fields(msg: Message) -> DeliveryReport | None:
    """RFC 3464 §2.2-2.3: one per-message block, then one block per recipient."""
    blocks = [
        fields
        for part in _parts(msg)
        if part.get_content_type() in _DSN_TYPES
        for fields in _status_blocks(part)
    ]
    recipients = [b for b in blocks if "action" in b or "final-recipient" in b]
    if not recipients:
        return None
    chosen = next((b for b in recipients if _action(b) == "failed"), recipients[0])
    diagnostic = _smtp_reply_text(_strip_type(chosen.get("diagnostic-code", "")))
    status = _status_code(chosen.get("status", "")) or _status_code(diagnostic)
    action = _action(chosen) or _ACTION_BY_CLASS.get(status[:1], "failed")
    status = status or _STATUS_BY_ACTION.get(action, "2.0.0")
    return DeliveryReport(
        action=action,
        status=status,
        recipient=_address(chosen.get("original-recipient", ""))
        or _address(chosen.get("final-recipient", "")),
        diagnostic=diagnostic or _status_text(status),
        original_message_id=_returned_message_id(msg),
        permanent=status.startswith("5"),
    )


def _from_free_text(msg: Message) -> DeliveryReport:
    """No status fields: read the status code, the recipient and the reason from the text.
    A failure notice without a code counts as permanent, as qmail's "I've given up" is."""
    full_text = _plain_text(msg)
    marker = _COPY_MARKER.search(full_text)
    text = full_text[: marker.start()] if marker else full_text
    found = _status_code(text)
    status = found or "5.0.0"
    recipient = _failed_recipient(msg, text)
    return DeliveryReport(
        action=_ACTION_BY_CLASS.get(status[:1], "failed"),
        status=status,
        recipient=recipient,
        diagnostic=_reason_line(text, found, recipient) or _header(msg, "Subject"),
        original_message_id=_returned_message_id(msg, full_text),
        permanent=status.startswith("5"),
    )


def _parts(msg: Message) -> Iterator[Message]:
    """Every part, depth first, without going inside a returned message."""
    yield msg
    payload = msg.get_payload()
    if msg.get_content_maintype() != "message" and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _parts(part)


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """compat32 parses message/delivery-status into one Message per block; what it left as
    text (message/global-delivery-status, RFC 6533) is split at blank lines here."""
    payload = part.get_payload()
    if isinstance(payload, str):
        text = _bytes_text(part.get_payload(decode=True) or b"", part.get_content_charset())
        return [_fields(message_from_string(b)) for b in re.split(r"\r?\n\s*\r?\n", text)]
    blocks = []
    for block in payload:
        if isinstance(block, Message):
            blocks.append(_fields(block))
            if isinstance(block.get_payload(), str) and block.get_payload().strip():
                blocks.extend(_status_blocks(block))
    return blocks


def _fields(block: Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in block:
        fields.setdefault(name.lower(), _header(block, name))
    return fields


def _action(fields: dict[str, str]) -> str:
    words = fields.get("action", "").lower().split()
    return words[0] if words and words[0] in _ACTIONS else ""


def _status_code(text: str) -> str:
    found = _STATUS.search(text)
    return found.group(1) if found else ""


def _status_text(status: str) -> str:
    _, subject, detail = (status.split(".") + ["", ""])[:3]
    return _STATUS_TEXT.get(f"{subject}.{detail}") or _SUBJECT_TEXT.get(subject, "") or status


def _strip_type(value: str) -> str:
    """RFC 3464 §2.3.6: "smtp; 550 ..." -> "550 ..." (also X-Postfix;, X-Unix;)."""
    return re.sub(r"^[A-Za-z][\w-]*;\s*", "", value.strip())


def _smtp_reply_text(text: str) -> str:
    """RFC 5321 §4.2.1: a multiline reply repeats "550-5.1.1" on every line; keep it once."""
    first = re.match(r"(\d{3})-([245]\.\d{1,3}\.\d{1,3})?", text)
    if first is None:
        return text
    code, enhanced = first.group(1), first.group(2) or ""
    repeat = rf"\s*\b{code}[ -]{re.escape(enhanced)}\s*"
    rest = " ".join(re.split(repeat, text[first.end() :]))
    return " ".join(f"{code} {enhanced} {rest}".split())


def _address(value: str) -> str | None:
    """RFC 3464 §2.3.1-2.3.2: "rfc822; user@example.org" -> "user@example.org"."""
    address = _strip_type(value).strip("<> ")
    return address or None


def _message_id(value: str) -> str | None:
    found = re.search(r"<[^<>\s]+>", value)
    if found:
        return found.group(0)
    value = value.strip()
    return f"<{value}>" if value and " " not in value else None


def _returned_message_id(msg: Message, text: str = "") -> str | None:
    """RFC 6522 §3: the returned original is message/rfc822, or text/rfc822-headers when
    only its header came back; failing both, a Message-ID line in the bounce's text."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype in _DSN_TYPES:
            continue
        if part.get_content_maintype() == "message" and isinstance(payload, list) and payload:
            found = _message_id(_header(payload[0], "Message-ID"))
        elif ctype == "text/rfc822-headers":
            returned = message_from_bytes(part.get_payload(decode=True) or b"")
            found = _message_id(_header(returned, "Message-ID"))
        else:
            continue
        if found:
            return found
    found = _MESSAGE_ID_LINE.search(text)
    return found.group(1) if found else None


def _plain_text(msg: Message) -> str:
    """The text/plain parts of the bounce itself, or its HTML with the tags taken out."""
    texts: dict[str, list[str]] = {"text/plain": [], "text/html": []}
    for part in _parts(msg):
        if part.get_content_type() in texts and isinstance(part.get_payload(), str):
            data = part.get_payload(decode=True) or b""
            texts[part.get_content_type()].append(_bytes_text(data, part.get_content_charset()))
    if texts["text/plain"]:
        return "\n".join(texts["text/plain"])
    return html.unescape(re.sub(r"<[^>]*>", " ", "\n".join(texts["text/html"])))


def _failed_recipient(msg: Message, text: str) -> str | None:
    """X-Failed-Recipients (Exim, Gmail), else the first line that starts with an address
    (qmail "<user@host>:", Exim, Exchange "user@host on <date>"), else the RCPT TO."""
    for _, address in getaddresses(_headers(msg, "X-Failed-Recipients")):
        if address:
            return address
    found = _ADDRESS_LINE.search(text) or _RCPT_TO.search(text)
    return found.group(1) if found else None


def _reason_line(text: str, status: str, recipient: str | None) -> str:
    """The line holding the status code (with the line above when it holds nothing else),
    else the first line after the recipient's that is not a heading ("because:")."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for number, line in enumerate(lines):
        if status and status in line:
            bare_code = len(line.split()) < 3  # Exchange: "<host #5.1.1>" under its reason
            return f"{lines[number - 1]} {line}".strip() if bare_code and number else line
    after = False
    for line in lines:
        if after and line and not line.endswith(":"):
            return line
        after = after or bool(recipient and recipient in line)
    return ""
