"""Strange input through receive() on SQLite and PostgreSQL: whatever arrives is stored, readable
and safe to show, with a note where something had to give, and the raw message complete."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgateway.cli_setup import prepare_database
from mailgateway.config import load_settings
from mailgateway.runtime import Runtime, open_runtime
from mailgateway.sanitize import block_remote_images
from tests.conftest import write_config
from tests.mailgateway.ingest_support import deliver, eml, inbound, raw_row, set_header, show


def stored(runtime: Runtime, mail: str | bytes) -> dict[str, Any]:
    """The message as `ticket show --json` has it, after it opened a ticket."""
    result = deliver(runtime, mail)
    assert result.action == "created", result.reason
    [message] = inbound(show(runtime, result.ticket))
    return message


def attachment_bytes(runtime: Runtime, message: dict[str, Any]) -> dict[str, bytes]:
    return {a["filename"]: runtime.store.get(a["sha256"]) for a in message["attachments"]}


def test_multipart_alternative_keeps_text_and_sanitized_html(runtime: Runtime) -> None:
    message = stored(runtime, "gmail-new-ticket")
    assert message["text"].startswith("Hi,\n\nsince this morning the export to CSV")
    assert message["html"].startswith('<div dir="ltr">Hi,<div><br></div>')
    assert message["attachments"] == [] and message["notes"] == []


def test_an_inline_image_by_cid_is_an_inline_attachment(runtime: Runtime) -> None:
    message = stored(runtime, "apple-mail-inline-image")
    [image] = message["attachments"]
    # macOS names it with a narrow no-break space before AM; shown as a plain space
    assert image["filename"] == "Screenshot 2024-06-05 at 10.12.33 AM.png"
    assert (image["content_type"], image["inline"]) == ("image/png", True)
    assert image["content_id"] == "<A1B2C3D4-E5F6-4789-ABCD-EF0123456789>"
    assert 'src="cid:A1B2C3D4-E5F6-4789-ABCD-EF0123456789"' in message["html"]
    assert block_remote_images(message["html"]) == (message["html"], 0)  # ours, not remote
    assert attachment_bytes(runtime, message)[image["filename"]].startswith(b"\x89PNG")


def test_a_forwarded_message_is_kept_whole_as_an_eml_attachment(runtime: Runtime) -> None:
    """Regression: the walk went into message/rfc822 parts, so the forwarded mail's text was
    glued to the body and no .eml was kept."""
    message = stored(runtime, "thunderbird-forward-attached")
    assert message["text"] == ("The delivery note does not match invoice 2024-0117, see the "
                               "forwarded mail.\n\nAnna")
    [forwarded] = message["attachments"]
    assert (forwarded["filename"], forwarded["content_type"]) == (
        "Delivery note 88123.eml", "message/rfc822")
    inner = email.message_from_bytes(attachment_bytes(runtime, message)[forwarded["filename"]])
    assert inner["Subject"] == "Delivery note 88123"
    assert inner["Message-ID"] == "<9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d@fabrikam.example>"
    assert [p.get_filename() for p in inner.walk() if p.get_filename()] == [
        "delivery-note-88123.pdf"]


def test_encoded_attachment_names_are_decoded_and_never_touch_the_file_system(
        runtime: Runtime) -> None:
    message = stored(runtime, "outlook-encoded-filenames")
    assert message["subject"] == "Счёт №17 и акт сверки"
    assert message["from_name"] == "Иван Петров"
    assert message["text"] == "Добрый день, счёт и акт сверки во вложении.\n\nИван Петров"
    names = [a["filename"] for a in message["attachments"]]
    assert names == ["Счёт №17.pdf", "Акт сверки за май.xlsx", "_.._.._etc_passwd"]  # 2047, 2231
    blobs = attachment_bytes(runtime, message)
    assert blobs["Счёт №17.pdf"].startswith(b"%PDF-1.4")
    assert blobs["_.._.._etc_passwd"] == b"root:x:0:0:root:/root:/bin/bash"
    stored_files = [p for p in runtime.settings.storage.path.rglob("*") if p.is_file()]
    assert {a["sha256"] for a in message["attachments"]} <= {p.name for p in stored_files}
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.name) and p.parent.name == p.name[:2]
               for p in stored_files)  # by sha256 under its first two digits, nothing else
    everything = [p.name for p in runtime.settings.path.parent.rglob("*")]
    assert not [n for n in everything if "passwd" in n or "Счёт" in n or n.endswith(".xlsx")]


def test_text_parts_beside_the_body_are_attachments(runtime: Runtime) -> None:
    """Regression (F-text-alternatives-in-body): a vCard and returned headers without a
    file name were appended to the text; now only text/plain makes it, and they are kept."""
    message = stored(runtime, "text-parts-beside-the-body")
    assert (message["text"], message["html"], message["notes"]) == ("Siehe Anhänge.", None, [])
    assert [(a["filename"], a["content_type"]) for a in message["attachments"]] == [
        ("Rechnung März 2024.pdf", "application/pdf"),
        ("日本語のファイル名がとても.pdf", "application/pdf"),
        ("_.._.._etc_passwd", "application/octet-stream"),
        ("Übersicht Q1.xls", "application/vnd.ms-excel"),
        ("中文文件.jpg", "image/jpeg"),
        ("invite.ics", "text/calendar"),
        ("part-7.vcf", "text/x-vcard"),
        ("part-8.txt", "text/rfc822-headers"),
    ]
    blobs = attachment_bytes(runtime, message)
    assert blobs["part-7.vcf"] == (
        "BEGIN:VCARD\nVERSION:3.0\nFN:Jürgen Beispiel\nTEL:+49 30 123\nEND:VCARD".encode())
    assert blobs["part-8.txt"] == b"Received: from x by y\nSubject: foo\n"


CHARSETS = {
    "webform-latin1-label-utf8-body": (
        "Name: Jürgen Köhler\nTelefon: 040 1234567\nNachricht: Bitte rufen Sie mich zurück",
        "text declared as iso-8859-1 was not; decoded as utf-8"),
    "crm-utf8-label-cp1252-body": (
        "our records show an open amount of € 249.00 for invoice “2024-0230”.",
        "text declared as utf-8 was not; decoded as windows-1252"),
    "raw-8bit-headers": (
        "Grüße aus Köln, die Lieferung ist nicht angekommen.",
        "raw 8-bit bytes in the header that are not UTF-8 were read as Latin-1"),
    "becky-iso-2022-jp": ("お世話になっております。\n請求書の件でご連絡いたしました。", None),
    "sendmail-unknown-8bit": (
        "Status: OK · 3 jobs · 0 errors – café machine restarted",
        "text declared as unknown-8bit was not; decoded as windows-1252"),
}


@pytest.mark.parametrize("name", list(CHARSETS))
def test_any_charset_even_a_wrong_one_is_read_with_a_note(runtime: Runtime, name: str) -> None:
    expected_text, note = CHARSETS[name]
    message = stored(runtime, name)
    assert expected_text in message["text"]
    assert message["notes"] == ([note] if note else [])


def test_raw_8bit_headers_are_read(runtime: Runtime) -> None:
    message = stored(runtime, "raw-8bit-headers")
    assert (message["subject"], message["from_name"]) == (
        "Lieferung für Baustelle Köln", "Hans Müller")
    japanese = stored(runtime, "becky-iso-2022-jp")
    assert (japanese["subject"], japanese["from_name"]) == ("請求書の件", "山田")


@pytest.mark.parametrize(("name", "subject", "from_name", "text"), [
    ("outlook-hebrew-iso-8859-8-i", "חשבונית", "דנה לוי", "שלום, החשבונית לא נפתחת. תודה, דנה"),
    ("outlook-thai-windows-874", "ใบแจ้งหนี้", "Somchai", "สวัสดีครับ ใบแจ้งหนี้เปิดไม่ได้"),
])
def test_charsets_python_knows_by_another_name(runtime: Runtime, name: str, subject: str,
                                                from_name: str, text: str) -> None:
    """Regression (F-charset-aliases): Outlook's iso-8859-8-i and windows-874 are unknown to
    Python's codecs, so subject and body were read as Windows-1252 and shown as Latin garbage."""
    message = stored(runtime, name)
    assert (message["subject"], message["from_name"]) == (subject, from_name)
    assert (message["text"], message["notes"]) == (text, [])


def test_a_sender_name_mail_parser_cannot_decode_is_stored(runtime: Runtime) -> None:
    """Regression: receive() raised (SMTP 451, pipe exit 1, for ever) on a cut base64 word."""
    data = set_header(eml("webform-latin1-label-utf8-body"), "From",
                      "=?UTF-8?B?SsO8cmdlbiBLw7ZobGVyI?= <j.koehler@northwind.example>")
    message = stored(runtime, data)
    assert message["from"] == "j.koehler@northwind.example"
    assert "some headers or parts could not be decoded; shown as far as readable" in (
        message["notes"])


def test_missing_from_date_and_message_id(runtime: Runtime) -> None:
    message = stored(runtime, "cron-missing-headers")
    assert message["from"] == "root@backup01.northwind.example"  # the envelope sender
    assert (message["message_id"], message["date"]) == (None, None)
    assert message["text"].startswith("backup.sh: rsync to nas01 failed")
    nobody = stored(runtime, set_header(eml("cron-missing-headers"), "Return-Path", None)
                    .replace(b"rsync to nas01", b"rsync to nas02"))
    assert nobody["from"] == "" and nobody["subject"].startswith("Cron <root@backup01>")


def test_repeated_headers_take_the_first(runtime: Runtime) -> None:
    message = stored(runtime, "shop-repeated-headers")
    assert message["subject"] == "Order 5531 cannot be shipped"
    assert message["from"] == "orders@shop.northwind.example"
    assert message["message_id"] == "<order-5531.1717589999@shop.northwind.example>"
    assert message["to"] == ["support@example.com", "billing@example.com"]
    assert message["date"] == "2024-06-05T12:19:59Z"


def test_a_one_megabyte_line_is_stored_whole(runtime: Runtime) -> None:
    line = ("0123456789abcdef" * 65536)[:1_000_000]
    data = set_header(eml("thunderbird-new-ticket"), "Message-ID", "<long-line@northwind.example>"
                      ).split(b"\n\n")[0] + b"\n\n" + line.encode() + b"\n"
    result = deliver(runtime, data)
    assert result.action == "created"
    [message] = inbound(show(runtime, result.ticket))
    assert message["text"] == line and message["notes"] == []
    assert runtime.store.get(raw_row(runtime, result.raw_id).sha256) == data


BROKEN_MIME = ("broken MIME structure (multipart/mixed whose boundary is missing or never "
               "comes): the text is shown as it came")


@pytest.mark.parametrize(("name", "text"), [
    ("multipart-without-boundary", "--foo\nContent-Type: text/plain\n\nhello\n--foo--"),
    ("multipart-boundary-never-found", "--foo\nContent-Type: text/plain\n\nhello there"),
])
def test_a_multipart_whose_boundary_never_comes_is_shown_as_text(runtime: Runtime, name: str,
                                                                 text: str) -> None:
    """Regression (F-broken-boundary-text-lost): with no boundary parameter, or one that is
    never in the body, the email package keeps the body as one string; it became an
    attachment part-1.bin of type multipart/mixed, the text was empty and nothing said why."""
    message = stored(runtime, name)
    assert (message["text"], message["reply_text"], message["html"]) == (text, text, None)
    assert (message["attachments"], message["notes"]) == ([], [BROKEN_MIME])


def test_an_empty_body(runtime: Runtime) -> None:
    message = stored(runtime, "outlook-empty-body")
    assert (message["text"], message["reply_text"], message["html"]) == ("", "", None)
    assert message["subject"] == "Please call me back: 040 1234 5678"


def test_html_only_mail_gets_a_text_and_a_reply_text(runtime: Runtime) -> None:
    message = stored(runtime, "outlook-web-html-only")
    assert message["reply_text"] == (
        "Hi Maria,\n\nthe new password works, thanks. You can close the ticket.\n\nSam")
    assert message["text"].startswith(message["reply_text"])
    assert "From: Support <support@example.com>" in message["text"]  # history kept in text
    assert "Dear Sam, we sent you a new link" in message["text"]


def test_winmail_dat_is_kept_as_an_attachment(runtime: Runtime) -> None:
    message = stored(runtime, "outlook-winmail-dat")
    [tnef] = message["attachments"]
    assert (tnef["filename"], tnef["content_type"]) == ("winmail.dat", "application/ms-tnef")
    assert attachment_bytes(runtime, message)["winmail.dat"].startswith(b"\x78\x9f\x3e\x22")


def test_a_calendar_invitation_keeps_its_invite(runtime: Runtime) -> None:
    message = stored(runtime, "google-calendar-invite")
    assert message["text"].startswith("You have been invited to the following event.")
    assert [(a["filename"], a["content_type"]) for a in message["attachments"]] == [
        ("invite.ics", "text/calendar"), ("invite.ics", "application/ics")]
    invite = runtime.store.get(message["attachments"][0]["sha256"])
    assert b"METHOD:REQUEST" in invite and b"SUMMARY:CSV export: walkthrough" in invite


def test_hostile_html_is_sanitized_and_its_remote_image_can_be_blocked(runtime: Runtime
                                                                        ) -> None:
    message = stored(runtime, "hostile-html")
    html = message["html"].lower()
    for banned in ("<script", "onerror", "onload", "<form", "<input", "<iframe", "javascript:",
                   "<link", "steal.css", "<style", "background-image", "alert("):
        assert banned not in html, banned
    assert '<a href="https://shop.example/order/5531"' in html  # plain links stay
    assert 'src="https://tracker.evil.example/open.gif?id=42"' in message["html"]
    blocked, count = block_remote_images(message["html"])
    assert count == 1 and "https://tracker.evil.example" not in blocked.replace(
        'data-remote-src="https://tracker.evil.example', "")
    assert 'data-remote-src="https://tracker.evil.example/open.gif?id=42"' in blocked


@pytest.fixture
def small_limits(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    config = write_config(tmp_path, database_url, limits={
        "max_attachments": 2, "max_attachment_size": 1000, "max_mime_depth": 4})
    runtime = open_runtime(load_settings(config))
    prepare_database(runtime)
    yield runtime
    runtime.close()


def _over_the_limits() -> bytes:
    """Four attachments, one over the size limit, and a part nested six levels deep."""
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = "Tom Fischer <tom.fischer@fabrikam.example>"
    mail["To"] = "support@example.com"
    mail["Subject"] = "Photos of the damaged delivery"
    mail["Message-ID"] = "<limits.20240605@fabrikam.example>"
    mail.set_content("Photos attached.")
    for number, size in ((1, 200), (2, 5000), (3, 300), (4, 400)):
        mail.add_attachment(bytes([number]) * size, maintype="image", subtype="jpeg",
                            filename=f"photo-{number}.jpg")
    nested = EmailMessage()
    nested.set_content("deep down")
    for _ in range(6):
        outer = EmailMessage()
        outer.make_mixed()
        outer.attach(nested)
        nested = outer
    mail.attach(nested)
    return mail.as_bytes()


def test_past_the_limits_the_message_is_stored_with_notes_and_the_raw_kept(
        small_limits: Runtime) -> None:
    data = _over_the_limits()
    result = deliver(small_limits, data)
    assert result.action == "created"
    [message] = inbound(show(small_limits, result.ticket))
    assert message["text"] == "Photos attached."
    assert [a["filename"] for a in message["attachments"]] == ["photo-1.jpg", "photo-3.jpg"]
    assert message["notes"] == [
        "attachment photo-2.jpg (5000 bytes) is over the size limit: kept in the raw message only",
        "more than 2 attachments: the rest are in the raw message only",
        "MIME nesting deeper than 4 levels not unpacked; the raw message is complete",
    ]
    assert small_limits.store.get(raw_row(small_limits, result.raw_id).sha256) == data


def test_nesting_too_deep_to_parse_is_quarantined_not_lost(runtime: Runtime) -> None:
    body = b"Content-Type: text/plain\n\ninnermost\n"
    for level in range(1000):  # past what Python's email parser can recurse into
        body = (b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (level, level)
                + body + b"\n--b%d--\n" % level)
    data = b"From: x@fabrikam.example\nSubject: nested\nMIME-Version: 1.0\n" + body
    result = deliver(runtime, data)
    assert result.action == "quarantined" and "parse failed" in result.reason
    assert runtime.store.get(raw_row(runtime, result.raw_id).sha256) == data
