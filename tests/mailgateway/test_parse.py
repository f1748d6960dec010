"""parse(): raw bytes to a ParsedMail, never a crash for anything that is a mail."""

from __future__ import annotations

import pytest

from mailgateway.config import LimitSettings
from mailgateway.parse import NotAMessage, looks_like_message, message_ids, parse, safe_filename
from tests.mailgateway.ingest_support import FIRST_MAIL, eml, set_header

LIMITS = LimitSettings()


def test_a_thunderbird_mail() -> None:
    mail = parse(eml("thunderbird-new-ticket"), LIMITS)
    assert (mail.message_id, mail.from_address, mail.from_name) == (
        FIRST_MAIL, "anna.berg@northwind.example", "Anna Berg")
    assert mail.to == [("", "support@example.com")]
    assert mail.cc == [("Jonas Weber", "jonas.weber@northwind.example")]
    assert mail.subject == "Invoice 2024-0117 charged twice"
    assert mail.sent_at.isoformat() == "2024-06-03T07:41:55"  # naive UTC
    assert (mail.in_reply_to, mail.references, mail.html, mail.notes) == (None, [], None, [])
    assert mail.text.startswith("Hello,\n\nour credit card was charged twice")
    assert mail.dedup_key == FIRST_MAIL


def test_lines_the_customer_wrote_like_a_header_block_stay_in_the_reply_text() -> None:
    """F-reply-cut-own-text: "From:", "To:" and "Date:" lines cut the reply at "From:"."""
    mail = parse(eml("outlook-booking-change"), LIMITS)
    assert mail.reply_text == mail.text == (
        "Hello,\n\nplease change my booking 4711 as follows:\nFrom: Berlin Tegel\nTo: Paris CDG\n"
        "Date: 12 March 2024\nPassengers: 2 adults, 1 child\n\nThank you,\nTom Berg")


def test_references_keep_their_order_and_in_reply_to_its_first_id() -> None:
    mail = parse(eml("outlook-reply-de"), LIMITS)
    assert mail.references == [FIRST_MAIL, "<ack.1.1717405321@example.com>",
                               "<reply.1.1717409012.4f2a@example.com>"]
    assert mail.in_reply_to == "<reply.1.1717409012.4f2a@example.com>"
    assert mail.header("Thread-Index") == "AQHatYq1c2hMk0d5Tke3bJcJ3QzE0LG3m5WwgAL4aBA="


@pytest.mark.parametrize(("data", "expected"), [
    (b"From: a@b.example\n\nhi", True),
    (b"\r\n\r\nReceived: from x\r\n\r\nhi", True),
    (b"From a@b.example Mon Jun  3 10:00:00 2024\nSubject: mbox\n\nhi", True),
    (b"", False), (b"   \n\n", False),
    (b"%PDF-1.4\n1 0 obj", False), (b"\x89PNG\r\n\x1a\n", False),
    (b"Hello there, this is just text\n", False),
])
def test_what_looks_like_a_message(data: bytes, expected: bool) -> None:
    assert looks_like_message(data) is expected


def test_garbage_is_not_a_message() -> None:
    with pytest.raises(NotAMessage):
        parse(b"\x00\x01\x02 binary junk", LIMITS)


def test_message_ids_are_clipped_to_what_a_line_holds() -> None:
    long_id = "<" + "x" * 1500 + "@example.com>"
    assert message_ids(f"{long_id} <b@c>") == [long_id[:998], "<b@c>"]
    assert message_ids("garbage without brackets") == []


def test_the_content_hash_ignores_line_ends_and_path_headers() -> None:
    """Regression: text kept CRLF from SMTP and LF from a Maildir, so the same mail without
    a Message-ID got two different keys."""
    data = eml("scanner-no-message-id")
    lf = parse(data, LIMITS)
    crlf = parse(b"Received: from relay by mx; Wed, 5 Jun 2024 16:20:09 +0200\r\n"
                 + data.replace(b"\n", b"\r\n"), LIMITS)
    assert lf.message_id is None and lf.dedup_key.startswith("sha256:")
    assert crlf.dedup_key == lf.dedup_key and "\r" not in crlf.text
    assert parse(data.replace(b"Pages: 1", b"Pages: 2"), LIMITS).dedup_key != lf.dedup_key


def test_the_content_hash_covers_the_attachments() -> None:
    """Regression (F-dedup-ignores-attachments): a scanner sent each page as a mail of its
    own, same sender, Date, subject and text; the second was taken for a duplicate and its
    PDF was lost. The same page delivered again keeps its key; a Message-ID alone still
    decides when there is one."""
    page1, page2 = eml("scanner-page-1-no-message-id"), eml("scanner-page-2-no-message-id")
    first, second = parse(page1, LIMITS), parse(page2, LIMITS)
    assert (first.message_id, first.text) == (None, second.text)
    assert first.dedup_key.startswith("sha256:") and second.dedup_key != first.dedup_key
    again = parse(b"Received: from relay by mx; Wed, 5 Jun 2024 16:20:09 +0200\r\n"
                  + page1.replace(b"\n", b"\r\n"), LIMITS)
    assert again.dedup_key == first.dedup_key
    with_id = [parse(set_header(data, "Date", "Wed, 5 Jun 2024 16:20:05 +0200\n"
                                "Message-ID: <scan.20240605162005@northwind.example>"), LIMITS)
               for data in (page1, page2)]
    assert {m.dedup_key for m in with_id} == {"<scan.20240605162005@northwind.example>"}


def test_a_forwarded_message_is_one_eml_attachment() -> None:
    mail = parse(eml("thunderbird-forward-attached"), LIMITS)
    assert "delivery note is attached" not in mail.text
    [forwarded] = mail.attachments
    assert (forwarded.filename, forwarded.content_type) == (
        "Delivery note 88123.eml", "message/rfc822")
    assert b"Subject: Delivery note 88123" in forwarded.data


def test_a_forward_without_a_name_is_named_after_its_subject() -> None:
    data = eml("thunderbird-forward-attached").replace(
        b'Content-Type: message/rfc822; name="Delivery note 88123.eml"\n'
        b'Content-Disposition: attachment; filename="Delivery note 88123.eml"\n',
        b"Content-Type: message/rfc822\n")
    [forwarded] = parse(data, LIMITS).attachments
    assert forwarded.filename == "Delivery note 88123.eml"


def test_a_delivery_report_keeps_the_returned_headers_as_an_attachment() -> None:
    """The returned headers are our own mail's, not the robot's words: beside the report,
    not in its text (F-text-alternatives-in-body)."""
    mail = parse(eml("postfix-dsn-agent-reply"), LIMITS)
    assert "could not\nbe delivered" in mail.text and "Message-ID:" not in mail.text
    [headers] = mail.attachments
    assert (headers.filename, headers.content_type) == ("part-1.txt", "text/rfc822-headers")
    assert b"Message-ID: <reply.7.1717603265.9b1c@example.com>" in headers.data


def test_only_the_plain_and_html_forms_of_an_alternative_are_the_body() -> None:
    """Regression (F-text-alternatives-in-body): every text/* part was appended to the text,
    so the AMP form of a booking mail put its HTML source under the customer's words."""
    mail = parse(eml("amp-email-alternative"), LIMITS)
    assert mail.text == "Hello, we need the invoice for booking 4711 please."
    assert mail.html == "<p>Hello, we need the invoice for booking 4711 please.</p>\n"
    [amp] = mail.attachments
    assert (amp.filename, amp.content_type, amp.inline) == ("part-1.html", "text/x-amp-html",
                                                            False)
    assert amp.data.startswith("<!doctype html><html ⚡4email".encode())


@pytest.mark.parametrize(("forms", "text"), [
    (["text/plain", "text/enriched"], "plain words"),
    (["text/enriched", "text/plain"], "plain words"),
    (["text/enriched"], "<bold>enriched</bold> words"),
])
def test_enriched_text_is_the_text_only_without_a_plain_form(forms: list[str], text: str
                                                             ) -> None:
    bodies = {"text/plain": "plain words", "text/enriched": "<bold>enriched</bold> words"}
    parts = "".join(f"--a\nContent-Type: {form}\n\n{bodies[form]}\n" for form in forms)
    data = (f"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/alternative; boundary=a\n\n{parts}--a--\n").encode()
    mail = parse(data, LIMITS)
    assert (mail.text, mail.attachments) == (text, [])


def test_nul_in_headers_is_dropped() -> None:
    """Regression: PostgreSQL refuses NUL in text, so a NUL in a subject failed the batch."""
    data = set_header(eml("thunderbird-new-ticket"), "Subject", "=?utf-8?q?Invoice=00_twice?=")
    data = set_header(data, "From", "=?utf-8?q?Anna=00_Berg?= <anna.berg@northwind.example>")
    mail = parse(data, LIMITS)
    assert (mail.subject, mail.from_name) == ("Invoice twice", "Anna Berg")


def test_an_address_too_long_to_be_one_is_not_used() -> None:
    data = set_header(eml("thunderbird-new-ticket"), "From", "a" * 300 + "@northwind.example")
    data = set_header(data, "Cc", "b" * 300 + "@northwind.example, jonas@northwind.example")
    mail = parse(data, LIMITS)
    assert mail.from_address == "anna.berg@northwind.example"  # Return-Path
    assert mail.cc == [("", "jonas@northwind.example")]


@pytest.mark.parametrize(("charset", "body", "text", "note"), [
    ("iso-8859-1", "Grüße".encode(), "Grüße",
     "text declared as iso-8859-1 was not; decoded as utf-8"),
    ("iso-8859-1", "Grüße".encode("latin-1"), "Grüße", None),
    ("windows-1252", "“quoted” €".encode("cp1252"), "“quoted” €", None),
    ("utf-8", "“quoted” €".encode("cp1252"), "“quoted” €",
     "text declared as utf-8 was not; decoded as windows-1252"),
    ("us-ascii", "naïve".encode(), "naïve", "text declared as us-ascii was not; decoded as utf-8"),
    ("x-no-such-charset", "Grüße".encode(), "Grüße",
     "text declared as x-no-such-charset was not; decoded as utf-8"),
    ("koi8-r", "Привет".encode("koi8-r"), "Привет", None),
    # F-charset-aliases: labels Python does not know, or reads with too small a table
    ("ks_c_5601-1987", "똠방각하".encode("cp949"), "똠방각하", None),
    ("windows-31j", "①髙橋".encode("cp932"), "①髙橋", None),
    ("x-mac-cyrillic", "Привет".encode("mac_cyrillic"), "Привет", None),
    ("x-gbk", "发票".encode("gbk"), "发票", None),
    ("hex", "Grüße".encode(), "Grüße", "text declared as hex was not; decoded as utf-8"),
])
def test_text_in_any_charset(charset: str, body: bytes, text: str, note: str | None) -> None:
    data = (f"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n\n"
            ).encode() + body + b"\n"
    mail = parse(data, LIMITS)
    assert mail.text == text
    assert mail.notes == ([note] if note else [])


def test_raw_utf8_headers_are_legal_and_need_no_note() -> None:
    """RFC 6532 allows UTF-8 in headers; only bytes that are not UTF-8 get a note."""
    mail = parse("From: Jürgen <j@b.example>\nSubject: Grüße\n\nhi\n".encode(), LIMITS)
    assert (mail.from_name, mail.subject, mail.notes) == ("Jürgen", "Grüße", [])
    latin = parse("From: Jürgen <j@b.example>\nSubject: Grüße\n\nhi\n".encode("latin-1"), LIMITS)
    assert (latin.from_name, latin.subject) == ("Jürgen", "Grüße")
    assert latin.notes == ["raw 8-bit bytes in the header that are not UTF-8 were read as Latin-1"]


def test_the_attachment_limit_is_noted_once() -> None:
    parts = "".join(f"--m\nContent-Type: application/octet-stream\nContent-Disposition: "
                    f"attachment; filename=f{n}.bin\n\nx{n}\n" for n in range(6))
    data = (f"From: a@b.example\nSubject: many\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/mixed; boundary=m\n\n{parts}--m--\n").encode()
    mail = parse(data, LimitSettings(max_attachments=2))
    assert [a.filename for a in mail.attachments] == ["f0.bin", "f1.bin"]
    assert mail.notes == ["more than 2 attachments: the rest are in the raw message only"]


def test_a_very_long_text_is_truncated_for_display_with_a_note() -> None:
    data = b"From: a@b.example\nSubject: log\n\n" + b"line of a log file\n" * 1000
    mail = parse(data, LimitSettings(max_text_chars=100))
    assert len(mail.text) == 100
    assert mail.notes == ["text truncated to 100 characters for display; the raw message is "
                          "complete"]


def test_a_long_content_type_and_content_id_fit_their_columns() -> None:
    data = (b"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=m\n\n--m\n"
            b"Content-Type: application/" + b"x" * 300 + b"\nContent-ID: <" + b"c" * 1100
            + b"@b>\n\ndata\n--m--\n")
    [part] = parse(data, LIMITS).attachments
    assert len(part.content_type) == 255 and len(part.content_id) == 998


@pytest.mark.parametrize(("name", "content_type", "expected"), [
    ("../../etc/passwd", "text/plain", "_.._etc_passwd"),
    ("C:\\Users\\anna\\report.xlsx", "application/octet-stream", "C:_Users_anna_report.xlsx"),
    ("evil\x00name.pdf", "application/pdf", "evil_name.pdf"),
    ("", "image/png", "part-3.png"),
    ("", "text/calendar", "invite.ics"),
    ("", "text/x-vcard", "part-3.vcf"),
    ("", "text/x-amp-html", "part-3.html"),
    ("", "text/rfc822-headers", "part-3.txt"),
    ("...", "application/zip", "part-3.bin"),
    ("a" * 300 + ".pdf", "application/pdf", "a" * 255),
])
def test_safe_filenames(name: str, content_type: str, expected: str) -> None:
    assert safe_filename(name, content_type, None, 3) == expected  # type: ignore[arg-type]


def test_a_truncated_encoded_word_in_a_name_does_not_stop_the_mail() -> None:
    """Regression: a base64 word cut at a bad length raised HeaderParseError ("Base64
    decoding error") out of parse(), so SMTP answered 451 and the pipe exited 1 for ever.
    Now the header is shown as written, and a note says so."""
    data = set_header(eml("webform-latin1-label-utf8-body"), "From",
                      "=?UTF-8?B?SsO8cmdlbiBLw7ZobGVyI?= <j.koehler@northwind.example>")
    mail = parse(data, LIMITS)
    assert mail.from_address == "j.koehler@northwind.example"
    assert mail.subject == "Kontaktformular: Rückruf erbeten"
    assert mail.text.startswith("Name: Jürgen Köhler")
    assert "some headers or parts could not be decoded; shown as far as readable" in mail.notes


def test_a_nul_in_a_charset_name_is_an_unknown_charset() -> None:
    """Regression: codecs.lookup raised ValueError on the NUL, so the mail was quarantined."""
    data = (b"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            b'Content-Type: text/plain; charset="utf\x008"\n\nGr\xc3\xbc\xc3\x9fe\n')
    assert parse(data, LIMITS).text == "Grüße"


def test_a_broken_multipart_deeper_down_is_text_beside_the_rest() -> None:
    """Regression (F-broken-boundary-text-lost): the inner part's boundary never comes; its
    content joins the text, in its charset, and the outer parts are read as usual."""
    data = ("From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=outer\n\n--outer\n"
            "Content-Type: text/plain; charset=utf-8\n\nSee below.\n--outer\n"
            'Content-Type: multipart/alternative; boundary="inner"; charset=iso-8859-1\n\n'
            "--lost\n\nGr\xfc\xdfe\n--outer\n"
            "Content-Type: application/pdf; name=a.pdf\n\n%PDF\n--outer--\n").encode("latin-1")
    mail = parse(data, LIMITS)
    assert mail.text == "See below.\n--lost\n\nGrüße"
    assert [a.filename for a in mail.attachments] == ["a.pdf"]
    assert mail.notes == ["broken MIME structure (multipart/alternative whose boundary is "
                          "missing or never comes): the text is shown as it came"]


def test_a_forward_that_will_not_turn_back_into_bytes_is_kept_as_text() -> None:
    """A forwarded mail with a boundary cut short and 8-bit text: the email package cannot
    write it out again as bytes; the .eml keeps its text instead of the mail failing."""
    inner = (b"From: Tom Fischer <tom.fischer@fabrikam.example>\nSubject: Lieferschein 88123\n"
             b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="------------inner0Y3Z'
             b"\n\nDer Lieferschein f\xfcr Auftrag 88123.\n")
    data = eml("thunderbird-forward-attached")
    start = data.index(b"Message-ID: <9a8b7c6d")
    end = data.index(b"\n--------------outerR7tW2xV9bQ4s--")
    mail = parse(data[:start] + inner + data[end:], LIMITS)
    [forwarded] = mail.attachments
    assert forwarded.filename == "Delivery note 88123.eml"
    assert forwarded.data.startswith(b"From: Tom Fischer <tom.fischer@fabrikam.example>\n")
    assert "Der Lieferschein f\ufffdr Auftrag 88123." in forwarded.data.decode()
