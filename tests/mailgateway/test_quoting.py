"""quoting: agents see what the customer just wrote, in the shapes real mail clients produce.

Each tests/corpus/quoting/<client>-<language>.txt is a reply as that client writes it, and
<name>.expected.txt next to it is exactly what an agent should see.
"""

from __future__ import annotations

import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailgateway.quoting import hidden_line_count, reply_text, strip_html_quotes

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "quoting"
SAMPLES = sorted(p for p in CORPUS.glob("*.txt") if not p.name.endswith(".expected.txt"))


def expected_for(sample: Path) -> str:
    return sample.with_name(sample.stem + ".expected.txt").read_text(encoding="utf-8").rstrip()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_corpus_reply_is_the_expected_new_text(sample: Path) -> None:
    assert reply_text(sample.read_text(encoding="utf-8")) == expected_for(sample)


def test_corpus_covers_every_client_and_language() -> None:
    names = {p.stem for p in SAMPLES}
    for client in ("gmail", "outlook-desktop", "outlook-web", "apple-mail", "thunderbird", "yahoo"):
        assert any(n.startswith(client + "-") for n in names), client
    for language in ("en", "de", "fr", "es", "pt", "ru"):
        assert any(f"-{language}" in n for n in names), language


@pytest.mark.parametrize(
    "attribution",
    [
        "On Mon, Feb 12, 2024 at 10:15 AM Example Helpdesk <support@example.com> wrote:",
        "Am 12.02.2024 um 10:15 schrieb Helpdesk <support@example.com>:",
        "Le lun. 12 févr. 2024 à 10:15, Support <support@example.com> a écrit :",
        "El lun, 12 feb 2024 a las 10:15, Soporte (<support@example.com>) escribió:",
        "Em seg., 12 de fev. de 2024 às 10:15, Suporte <support@example.com> escreveu:",
        "12 февр. 2024 г., в 10:15, Служба поддержки <support@example.com> написал(а):",
        "Op ma 12 feb. 2024 om 10:15 schreef Helpdesk <support@example.com>:",
        "Il giorno lun 12 feb 2024 alle ore 10:15 Supporto <support@example.com> ha scritto:",
        "Den mån 12 feb. 2024 kl 10:15 skrev Support <support@example.com>:",
    ],
)
def test_attribution_in_each_language_cuts(attribution: str) -> None:
    text = f"Thanks, solved.\n\n{attribution}\n\n> Please restart the printer.\n"
    assert reply_text(text) == "Thanks, solved."


@pytest.mark.parametrize(
    "attribution",
    [
        "On Monday, February 12, 2024, 10:15:00 AM GMT+1, Helpdesk <support@example.com> wrote:",
        "Am Montag, 12. Februar 2024 um 10:15:00 MEZ hat Helpdesk <support@example.com> "
        "Folgendes geschrieben:",
        "Le lundi 12 février 2024 à 10:15:00 UTC+1, Support <support@example.com> a écrit :",
        "El lunes, 12 de febrero de 2024, 10:15:00 CET, Soporte <support@example.com> escribió:",
        "Em segunda-feira, 12 de fevereiro de 2024 10:15:00 BRT, Suporte <support@example.com> "
        "escreveu:",
        "Il lunedì 12 febbraio 2024, 10:15:00 CET, Supporto <support@example.com> ha scritto:",
    ],
)
def test_yahoo_attribution_cuts_its_unquoted_history(attribution: str) -> None:
    """Yahoo indents its attribution and marks no quoted line with ">" (F-yahoo-de-quote)."""
    text = f"Thanks, solved.\n\n    {attribution}  \n \n Hello,\n\nplease restart the printer.\n"
    assert reply_text(text) == "Thanks, solved."


def test_gmail_attribution_wrapped_before_the_address_cuts() -> None:
    text = (
        "Done.\n\nOn Mon, Feb 12, 2024 at 10:15 AM Maximilian Mustermann-Schmidt\n"
        "<max.mustermann-schmidt@example.com> wrote:\n\n> old\n"
    )
    assert reply_text(text) == "Done."


def test_new_line_just_above_an_attribution_is_kept() -> None:
    text = "On second thought, I agree.\nOn Mon, Feb 12, 2024 at 10:15 AM X <x@example.com> wrote:"
    assert reply_text(text + "\n> old\n") == "On second thought, I agree."


def test_words_that_look_like_an_attribution_but_carry_no_date_are_kept() -> None:
    text = "On the phone you said the following, and I wrote:\nthe invoice is wrong."
    assert reply_text(text) == text


@pytest.mark.parametrize(
    "separator",
    [
        "-----Original Message-----",
        "-----Ursprüngliche Nachricht-----",
        "-----Message d'origine-----",
        "-----Mensaje original-----",
        "-----Mensagem original-----",
        "-----Исходное сообщение-----",
        "-------- Original message --------",
    ],
)
def test_original_message_separator_cuts(separator: str) -> None:
    text = f"See attachment.\n\n{separator}\nFrom: a@example.com\nSent: today\n\nold text\n"
    assert reply_text(text) == "See attachment."


@pytest.mark.parametrize(
    "block",
    [
        "From: Helpdesk <support@example.com>\nSent: Monday, February 12, 2024 10:15 AM\n"
        "To: Anna Smith <anna@example.com>\nCc: Finance <finance@example.com>\n"
        "Subject: RE: Printer offline",
        # within one organisation Outlook writes names only, but always the Subject
        "From: Helpdesk\nSent: Monday, February 12, 2024 10:15 AM\nTo: Anna Smith\n"
        "Subject: RE: Printer offline",
        # Outlook converted from HTML marks the field names bold
        "*From:* Helpdesk <support@example.com>\n*Sent:* Monday, February 12, 2024 10:15 AM\n"
        "*To:* Anna Smith\n*Subject:* RE: Printer offline",
        # Outlook for Mac writes Date:, Apple Mail puts Subject: before it
        "From: Helpdesk <support@example.com>\nDate: Monday, 12 February 2024 at 10:15\n"
        "To: Anna Smith <anna@example.com>\nSubject: Re: Printer offline",
        "From: Helpdesk <support@example.com>\nSubject: Re: Printer offline\n"
        "Date: 12 February 2024 at 10:15:00 CET\nTo: Anna Smith <anna@example.com>",
        "From: Helpdesk <support@example.com>\nDate: Monday, 12 February 2024 at 10:15\n"
        "To: Anna Smith <anna@example.com>",
        "Von: Helpdesk <support@example.com>\nGesendet: Montag, 12. Februar 2024 10:15\n"
        "An: Anna Schmidt\nBetreff: AW: Drucker offline",
        "Von: Helpdesk <support@example.com>\nDatum: Montag, 12. Februar 2024 um 10:15\n"
        "An: Anna Schmidt <anna@example.com>\nBetreff: Re: Drucker offline",
        "De\u00a0: Support <support@example.com>\nEnvoyé\u00a0: lundi 12 février 2024 10:15\n"
        "À\u00a0: Jean Dupont\nObjet\u00a0: RE: Imprimante hors ligne",
        "De: Soporte <support@example.com>\nEnviado el: lunes, 12 de febrero de 2024 10:15\n"
        "Para: Juan Pérez\nAsunto: RE: Impresora sin conexión",
        "De: Suporte <support@example.com>\nEnviado: segunda-feira, 12 de fevereiro de 2024 10:15\n"
        "Para: João Silva\nAssunto: RE: Impressora",
        "От: Служба поддержки <support@example.com>\nОтправлено: 12 февраля 2024 г. 10:15\n"
        "Кому: Ольга Смирнова\nТема: RE: Принтер",
        "Da: Supporto <support@example.com>\nInviato: lunedì 12 febbraio 2024 10:15\n"
        "A: Marco Rossi\nOggetto: R: Stampante",
        "Van: Helpdesk <support@example.com>\nVerzonden: maandag 12 februari 2024 10:15\n"
        "Aan: Jan de Vries\nOnderwerp: RE: Printer",
        "Från: Support <support@example.com>\nSkickat: den 12 februari 2024 10:15\n"
        "Till: Anna Svensson\nÄmne: SV: Skrivare",
    ],
)
def test_mail_header_blocks_cut(block: str) -> None:
    assert reply_text(f"Approved.\n\n{block}\n\nold\n") == "Approved."


@pytest.mark.parametrize(
    "lines",
    [
        "From: Berlin Tegel\nTo: Paris CDG\nDate: 12 March 2024",  # F-reply-cut-own-text
        "Von: Hamburg Hbf\nAn: München Hbf\nDatum: 15.03.2024",
        "From: billing@example.com\nDate: 2024-03-04 23:10:02\nStatus: 5.7.1",
    ],
)
def test_lines_that_only_look_like_a_header_block_are_kept(lines: str) -> None:
    text = f"Please book this instead:\n{lines}\n\nThanks,\nTom"
    assert reply_text(text) == text


def test_inline_answers_keep_their_questions_and_drop_the_trailing_quote() -> None:
    text = (
        "> Which version do you use?\n"
        "3.2\n"
        "> And which browser?\n"
        "Firefox\n"
        "> Thanks in advance,\n"
        "> Helpdesk\n"
    )
    reply = reply_text(text)
    assert reply == "> Which version do you use?\n3.2\n> And which browser?\nFirefox"
    assert hidden_line_count(text, reply) == 2


def test_bottom_posted_reply_drops_the_quote_above_it() -> None:
    text = "On 12/02/2024 10:15, Helpdesk wrote:\n> Which version?\n\nVersion 3.2.\n"
    assert reply_text(text) == "Version 3.2."


def test_trailing_unattributed_quote_is_dropped() -> None:
    assert reply_text("Works now.\n\n> Try again please.\n>\n") == "Works now."


@pytest.mark.parametrize("delimiter", ["-- ", "--"])
def test_signature_is_cut(delimiter: str) -> None:
    text = f"Please call me back.\n\n{delimiter}\nAnna Smith\n+44 20 7946 0000\n"
    assert reply_text(text) == "Please call me back."


@pytest.mark.parametrize(
    "device_line",
    [
        "Sent from my iPhone",
        "Sent from my iPad",
        "Sent from my Galaxy",
        "Sent from Mail for Windows",
        "Get Outlook for iOS",
        "Get Outlook for Android",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Enviado desde mi iPhone",
        "Enviado do meu iPhone",
        "Отправлено с iPhone",
        "Sent from Yahoo Mail for iPhone",
    ],
)
def test_sent_from_device_line_is_cut(device_line: str) -> None:
    assert reply_text(f"OK, thanks!\n\n{device_line}\n\n> Old conversation\n") == "OK, thanks!"
    assert reply_text(f"OK, thanks!\n\n{device_line}\n") == "OK, thanks!"


def test_device_line_with_text_after_it_is_the_customers() -> None:
    text = "Mails I send end with\n\nSent from my work laptop.\n\nPlease remove that line."
    assert reply_text(text) == text


def test_signature_delimiter_followed_by_more_than_a_signature_is_kept() -> None:
    body = "\n".join(f"{n}. step {n}" for n in range(1, 13))
    text = f"Steps:\n\n-- \n{body}\n\nThanks"
    assert reply_text(text) == text


def test_only_a_quote_falls_back_to_the_whole_text() -> None:
    text = "\n\nOn Mon, Feb 12, 2024 at 10:15 AM X <x@example.com> wrote:\n> old\n> text\n\n"
    assert reply_text(text) == text.strip()


def test_only_a_device_line_falls_back_to_the_whole_text() -> None:
    assert reply_text("Sent from my iPhone\n") == "Sent from my iPhone"


def test_forward_as_the_whole_body_is_new_text_but_its_own_quote_is_cut() -> None:
    text = (
        "---------- Forwarded message ---------\n"
        "From: Customer <c@example.com>\n"
        "Date: Mon, Feb 12, 2024 at 10:15 AM\n"
        "Subject: Broken link\n\n"
        "The link in your newsletter is broken.\n\n"
        "On Sun, Feb 11, 2024 at 9:00 AM News <news@example.com> wrote:\n"
        "> Read more here\n"
    )
    reply = reply_text(text)
    assert reply.startswith("---------- Forwarded message ---------\nFrom: Customer")
    assert reply.endswith("The link in your newsletter is broken.")


def test_forward_after_new_text_is_cut() -> None:
    text = "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: a@example.com\n\nx\n"
    assert reply_text(text) == "FYI, see below."


def test_crlf_is_normalised() -> None:
    text = "Hello,\r\n\r\nit works.  \r\n\r\nOn 12/02/2024 10:15, Helpdesk wrote:\r\n> old\r\n"
    assert reply_text(text) == "Hello,\n\nit works."


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n   \n",
        os.urandom(4096).decode("latin-1"),
        bytes(range(256)).decode("latin-1") * 50,
        "\ud800 lone surrogate \udfff",
        "x" * 1_000_000,
        "On " * 300_000 + "wrote:",
        "Am " + "schrieb 12:00 " * 70_000,
        "пн, " + "пишет 10:15 " * 80_000,
        "From: x\n" * 50_000,
        ">" * 1_000_000,
    ],
    ids=[
        "empty",
        "blank",
        "random",
        "bytes",
        "surrogates",
        "1mb-line",
        "on-on-on",
        "schrieb",
        "cyrillic",
        "from-lines",
        "quote-chars",
    ],
)
def test_garbage_and_huge_input_never_raises_and_stays_fast(text: str) -> None:
    started = time.perf_counter()
    reply = reply_text(text)
    assert time.perf_counter() - started < 2  # bounded patterns: one scan, no backtracking blowup
    assert isinstance(reply, str) and len(reply) <= len(text)
    assert hidden_line_count(text, reply) >= 0


def test_non_text_input_does_not_raise() -> None:
    assert reply_text(b"Thanks\r\n\r\n> old\r\n") == "Thanks"  # type: ignore[arg-type]
    assert reply_text(None) == ""  # type: ignore[arg-type]
    assert strip_html_quotes(None) == ""  # type: ignore[arg-type]


def test_hidden_line_count_counts_non_blank_lines_not_shown() -> None:
    text = (CORPUS / "gmail-en.txt").read_text(encoding="utf-8")
    reply = reply_text(text)
    # attribution (2 lines) + 6 non-blank quoted lines; the empty ">" lines count too
    assert hidden_line_count(text, reply) == 2 + 9
    assert hidden_line_count(reply, reply) == 0
    assert hidden_line_count("a\nb\n", "") == 2


def test_hidden_line_count_counts_a_repeated_line_once_per_hidden_copy() -> None:
    text = "Thanks,\nAnna\n\nFrom: x@example.com\nSent: y\nTo: Anna\n\nThanks,\nHelpdesk\n"
    assert hidden_line_count(text, reply_text(text)) == 5


class _VisibleText(HTMLParser):
    """The words a reader would see, to assert on HTML without pinning its exact markup."""

    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("style", "head", "script")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("style", "head", "script")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.words.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return re.sub(r"\s+", " ", " ".join(parser.words)).strip()


HTML_CASES = {
    "gmail.html": ("Thanks, the printer works again", ["wrote:", "Please restart the printer"]),
    "outlook-desktop.html": (
        "anbei der gewünschte Screenshot",
        ["Gesendet:", "Hallo Frau Schneider", "können Sie uns"],
    ),
    "outlook-web.html": ("Le problème persiste", ["Envoyé", "Bonjour Jean"]),
    "apple-mail.html": ("Yes, 3pm works for me", ["wrote:", "IT office", "does not boot"]),
    "thunderbird.html": ("Номер договора", ["пишет:", "Укажите"]),
    "yahoo.html": ("adjunto la factura", ["escribió:", "nos puede enviar"]),
}


@pytest.mark.parametrize(("name", "case"), HTML_CASES.items(), ids=list(HTML_CASES))
def test_html_quote_container_is_removed_and_new_text_stays(
    name: str, case: tuple[str, list[str]]
) -> None:
    kept, removed = case
    stripped = visible_text(strip_html_quotes((CORPUS / "html" / name).read_text("utf-8")))
    assert kept in stripped
    for phrase in removed:
        assert phrase not in stripped


def test_html_every_client_has_a_sample() -> None:
    assert sorted(HTML_CASES) == sorted(
        p.name for p in (CORPUS / "html").glob("*.html") if "forward" not in p.name
    )


def test_html_cut_closes_the_elements_left_open() -> None:
    html = (CORPUS / "html" / "outlook-desktop.html").read_text("utf-8")
    stripped = strip_html_quotes(html)
    assert stripped.endswith("</div></div></body></html>")
    assert "Petra Schneider" in visible_text(stripped)


def test_html_nested_quotes_are_removed_up_to_their_own_end() -> None:
    html = (
        '<p>New answer</p><blockquote type="cite"><div>q1<blockquote type="cite">q0'
        "</blockquote>still q1</div></blockquote><p>After the quote</p>"
    )
    assert strip_html_quotes(html) == "<p>New answer</p><p>After the quote</p>"


def test_html_forward_only_is_kept_whole() -> None:
    html = (CORPUS / "html" / "gmail-forward.html").read_text("utf-8")
    assert strip_html_quotes(html) == html


def test_html_without_quotes_is_returned_unchanged() -> None:
    html = '<div dir="ltr">Hello<blockquote>a plain blockquote</blockquote></div>'
    assert strip_html_quotes(html) == html


@pytest.mark.parametrize(
    "html",
    [
        "",
        '<div class="gmail_quote">',
        "<p>x</p><![foo bar]><blockquote type=cite>q",
        '<p>new</p><blockquote type="cite">never closed <div><div>',
        "</div></blockquote>" * 1000 + '<div class="gmail_quote">',
        os.urandom(8192).decode("latin-1") + '<div class="yahoo_quoted">',
        "<p>" + "x" * 1_000_000 + '</p><div id="appendonsend"></div>',
    ],
    ids=["empty", "only-open", "marked-section", "unclosed", "stray-ends", "random", "huge"],
)
def test_html_garbage_never_raises(html: str) -> None:
    stripped = strip_html_quotes(html)
    assert isinstance(stripped, str) and len(stripped) <= len(html) + 100


def test_html_unclosed_quote_runs_to_the_end() -> None:
    html = '<p>new</p><blockquote type="cite">never closed <div>old'
    assert strip_html_quotes(html) == "<p>new</p>"
