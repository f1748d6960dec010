"""A seeded corpus of support mail shaped like a real inbox, for bench/ingest.py.

A quarter of the messages open a conversation; the rest reply in one, quoting its history
the way mail clients do (a reply to our agent's answer names that answer, which we never
stored, in In-Reply-To, so threading falls back to References). Plain text and
multipart/alternative; utf-8, iso-8859-1 and windows-1252 bodies, 8bit, quoted-printable
or base64; about 5 % carry a 50-300 KB attachment; about 20 KB a message on average.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from html import escape

SENTENCES = {
    "en": ["Our order has not arrived yet and the tracking page shows nothing since Monday.",
           "Could you please check why the invoice was charged twice on my card?",
           "The app crashes every time I try to export the report as a PDF file.",
           "I tried resetting my password but the link in the email has already expired.",
           "We would like to upgrade to the business plan for twelve more seats.",
           "Thanks for the quick answer, that solved half of the problem for us."],
    "de": ["Die Lieferung ist leider unvollständig, es fehlen zwei Kartons mit Zubehör.",
           "Können Sie mir bitte eine Rechnung mit unserer Umsatzsteuer-ID schicken?",
           "Seit dem Update lässt sich die Anwendung nicht mehr öffnen, Grüße aus Köln.",
           "Ich möchte das Abonnement zum Monatsende kündigen, bitte bestätigen Sie das.",
           "Außerdem wäre es schön, wenn die Größe der Schrift einstellbar wäre."],
    "fr": ["Bonjour, la facture reçue ne correspond pas à la commande passée en février.",
           "Le colis est arrivé abîmé, voici les photos prises à la réception.",
           "Pourriez-vous m'envoyer un devis détaillé pour l'année prochaine ?",
           "Après la mise à jour, l'écran d'accueil reste blanc sur mon téléphone."],
    "es": ["Hola, el pedido llegó incompleto y falta el cargador del equipo.",
           "¿Podrían revisar por qué no puedo iniciar sesión desde ayer por la mañana?",
           "La factura tiene un error en la dirección, el código postal está mal.",
           "Muchas gracias por la ayuda, ya funciona todo correctamente en la oficina."],
}
NAMES = {"en": ["Mary Jones", "Tom Baker", "Priya Shah", "Liam O'Neil"],
         "de": ["Jürgen Müller", "Anna Schäfer", "Björn Weiß"],
         "fr": ["Hélène Dupré", "François Lefèvre", "Zoé Girard"],
         "es": ["José Núñez", "María Peña", "Íñigo Ortiz"]}
CHARSETS = [("utf-8", 0.5), ("iso-8859-1", 0.25), ("windows-1252", 0.25)]
SMART = str.maketrans({"'": "\u2019", "-": "\u2013"})  # what Outlook types on windows-1252
AGENT = "Support <support@example.com>"


@dataclass
class Conversation:
    number: int
    name: str
    address: str
    language: str
    subject: str
    charset: str
    html: bool
    history: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, who, date, text


class CorpusWriter:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.clock = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        self.conversations: list[Conversation] = []
        self.sequence = 0

    def messages(self, count: int) -> list[bytes]:
        """count messages; exactly a quarter (rounded up) open a conversation."""
        openers = set(self.random.sample(range(1, count), max(0, (count + 3) // 4 - 1))) | {0}
        return [self.opener() if i in openers else self.reply() for i in range(count)]

    def opener(self) -> bytes:
        r = self.random
        language = r.choice(list(SENTENCES))
        name = r.choice(NAMES[language])
        charset = r.choices([c for c, _ in CHARSETS], [w for _, w in CHARSETS])[0]
        number = len(self.conversations)
        topic = textwrap.shorten(r.choice(SENTENCES[language]).split(",")[0].rstrip(".?"), 60,
                                 placeholder="")
        conversation = Conversation(number, name, f"customer{number}@{language}.example",
                                    language, topic, charset, r.random() < 0.5)
        self.conversations.append(conversation)
        return self.render(conversation, in_reply_to=None)

    def reply(self) -> bytes:
        recent = self.conversations[-40:]  # replies come while a conversation is alive
        conversation = self.random.choice(recent)
        if self.random.random() < 0.5:  # our agent answered in between; we quote that
            self.tick()
            agent_id = f"<agent.{self.next_id()}@example.com>"
            conversation.history.append(
                (agent_id, AGENT, format_datetime(self.clock),
                 "Thank you for your message. " + self.paragraphs(conversation.language, 1)))
        return self.render(conversation, in_reply_to=conversation.history[-1][0])

    def render(self, c: Conversation, in_reply_to: str | None) -> bytes:
        r = self.random
        self.tick()
        message_id = f"<{self.next_id()}.{r.getrandbits(40):x}@{c.language}.example>"
        date = format_datetime(self.clock)
        new_text = self.paragraphs(c.language, r.randint(1, 5))
        if c.charset == "windows-1252":
            new_text = new_text.translate(SMART) + " Preis: 120 \u20ac."
        quoted = quote_history(c.history) if in_reply_to else ""
        m = EmailMessage()
        for hop in range(r.randint(2, 4)):
            m["Received"] = (f"from mx{hop}.{c.language}.example (mx{hop}.{c.language}.example "
                             f"[192.0.2.{hop + 10}]) by mail.example.com with ESMTPS id "
                             f"{r.getrandbits(48):x}; {date}")
        m["From"] = Address(c.name, addr_spec=c.address)
        m["To"] = "Support <support@example.com>"
        m["Subject"] = ("Re: " if in_reply_to else "") + c.subject
        m["Date"] = date
        m["Message-ID"] = message_id
        if in_reply_to:
            m["In-Reply-To"] = in_reply_to
            m["References"] = " ".join(h[0] for h in c.history[-10:])
        m["X-Mailer"] = r.choice(["Microsoft Outlook 16.0", "Apple Mail (2.3731)",
                                  "Mozilla Thunderbird 115.8", "Gmail"])
        body = new_text + ("\n\n" + quoted if quoted else "") + "\n"
        cte = r.choice(["quoted-printable", "8bit", "base64"])
        m.set_content(body, charset=c.charset, cte=cte)
        if c.html:
            m.add_alternative(to_html(new_text, quoted), subtype="html", charset=c.charset,
                              cte="quoted-printable" if cte == "8bit" else cte)
        if r.random() < 0.05:
            size = r.randint(50_000, 300_000)
            m.add_attachment(r.randbytes(size), maintype="application", subtype="pdf",
                             filename=r.choice(["Rechnung März.pdf", "photo-colis.pdf",
                                                "export.pdf", "factura-ñ.pdf"]))
        c.history.append((message_id, str(m["From"]), date, new_text))
        return m.as_bytes(policy=SMTP)

    def paragraphs(self, language: str, count: int) -> str:
        """Wrapped at 72 as mail clients send plain text."""
        r = self.random
        return "\n\n".join(
            textwrap.fill(" ".join(r.choices(SENTENCES[language], k=r.randint(2, 8))), 72)
            for _ in range(count))

    def tick(self) -> None:
        self.clock += timedelta(seconds=self.random.randint(20, 900))

    def next_id(self) -> int:
        self.sequence += 1
        return self.sequence


def quote_history(history: list[tuple[str, str, str, str]]) -> str:
    """The whole thread below the reply, each older message one level deeper."""
    out, depth = [], 1
    for _, who, date, text in reversed(history[-6:]):
        prefix = "> " * depth
        out.append(f"{prefix.strip()} On {date}, {who} wrote:".strip() if depth > 1
                   else f"On {date}, {who} wrote:")
        out.extend(prefix + line if line else prefix.rstrip() for line in text.splitlines())
        depth += 1
    return "\n".join(out)


def to_html(new_text: str, quoted: str) -> str:
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in new_text.split("\n\n"))
    quote = (f'<div class="gmail_quote"><blockquote style="margin:0 0 0 .8ex;'
             f'border-left:1px solid #ccc;padding-left:1ex">'
             f"{escape(quoted).replace(chr(10), '<br>')}</blockquote></div>") if quoted else ""
    return (f'<html><head><meta http-equiv="Content-Type" content="text/html"></head>'
            f'<body><div dir="ltr">{paragraphs}</div>{quote}</body></html>')


def corpus(count: int, seed: int) -> list[bytes]:
    return CorpusWriter(seed).messages(count)
