"""The ticket page over HTTP on both databases: the conversation, what mail may show of itself,
the changes agents make (each an Event), notes, and the why-is-this-here moves."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from models.events import EventKind
from models.schema import Agent, Event, Message, Outbox, Ticket
from tests.webui.conftest import ADMIN, AGENT, OTHER, Instance, mail

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2a3f5e30000000049454e44ae426082")
HOSTILE_HTML = ('<p>Hi there</p><script>window.pwned=1</script>'
                '<img src="x" onerror="window.pwned=2">'
                '<img src="http://tracker.test/pixel.gif" alt="pixel">'
                '<a href="javascript:alert(1)">click</a>')


def kinds(instance: Instance, ticket_id: int) -> list[str]:
    with instance.runtime.sessions() as session:
        return list(session.scalars(select(Event.kind).where(Event.ticket_id == ticket_id)
                                    .order_by(Event.id)))


def ticket(instance: Instance, ticket_id: int) -> Ticket:
    with instance.runtime.sessions() as session:
        found = session.get(Ticket, ticket_id)
        assert found is not None
        _ = (found.tags, found.assignee, found.queue)
        return found


def test_conversation_oldest_first_with_quoted_history_behind_a_toggle(instance: Instance) -> None:
    first = instance.deliver(mail("Broken login", "I cannot log in.", message_id="<q1@c.example>"))
    quoted = "\n".join(f"> old line {n}" for n in range(12))
    attribution = "On Mon, 2 Nov 2026 at 10:00, Anna Schmidt <anna@customer.example> wrote:"
    instance.deliver(mail("Re: Broken login", f"Still broken.\n\n{attribution}\n{quoted}",
                          in_reply_to="<q1@c.example>"))
    page = instance.client().page(f"/tickets/{first.ticket}").html
    assert page.index("I cannot log in.") < page.index("Still broken.")
    assert "<summary>13 quoted lines hidden</summary>" in page
    hidden = page[page.index("quoted lines hidden"):]
    assert "old line 11" in hidden and "old line 11" not in page[:page.index("quoted lines hidden")]
    assert "its In-Reply-To header names a message of this ticket" in page
    assert "&lt;q1@c.example&gt;" in page  # the reference that threaded it


def test_html_mail_is_framed_sandboxed_and_inert(instance: Instance) -> None:
    result = instance.deliver(mail("Hostile html", "Plain part.", html=HOSTILE_HTML))
    client = instance.client()
    page = client.page(f"/tickets/{result.ticket}").html
    frame = re.search(r'<iframe[^>]*src="(/messages/(\d+)/html)"[^>]*>', page)
    assert frame, "the HTML part is shown in a frame"
    sandbox = re.search(r'sandbox="([^"]*)"', frame.group(0)).group(1).split()
    assert "allow-scripts" not in sandbox
    assert "1 remote image blocked" in page
    for document in (page, client.page(frame.group(1)).html):
        assert "window.pwned" not in document and "javascript:" not in document
        assert not re.search(r'<img[^>]+src="http://tracker\.test', document)
    answer = client.raw.get(frame.group(1))
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script" not in policy and "http:" not in policy
    assert "sandbox" in policy and "allow-scripts" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    shown = client.raw.get(frame.group(1) + "?images=1")
    assert 'src="http://tracker.test/pixel.gif"' in shown.get_data(as_text=True)
    assert "img-src 'self' data: https: http:" in shown.headers["Content-Security-Policy"]


def test_attachments_download_safely_and_images_show_in_place(instance: Instance) -> None:
    result = instance.deliver(mail(
        "Files attached", "See attached.",
        html='<p>Logo: <img src="cid:logo@x"></p>',
        related=(("logo@x", "image/png", PNG),),
        attachments=(("Ünïcode \"report\".html", "text/html", b"<script>alert(1)</script>"),
                     ("../../etc/passwd.svg", "image/svg+xml", b"<svg onload='alert(1)'/>"))))
    with instance.runtime.sessions() as session:
        message = session.scalar(select(Message).where(Message.ticket_id == result.ticket))
        found = {a.content_type: a for a in message.attachments}
    client = instance.client()
    page = client.page(f"/tickets/{result.ticket}").html
    html_file, svg, png = (found[t] for t in ("text/html", "image/svg+xml", "image/png"))
    assert png.content_id and "logo@x" in png.content_id
    assert f'href="/attachments/{html_file.id}" download' in page
    assert f'<img src="/attachments/{png.id}/inline"' in page
    answer = client.raw.get(f"/attachments/{html_file.id}")
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="') and "\n" not in disposition
    assert "filename*=UTF-8''%C3%9Cn%C3%AFcode%20%22report%22.html" in disposition
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in answer.headers["Content-Security-Policy"]
    assert answer.data == b"<script>alert(1)</script>"
    assert client.raw.get(f"/attachments/{svg.id}/inline").status_code == 404  # SVG: download only
    inline = client.raw.get(f"/attachments/{png.id}/inline")
    assert inline.status_code == 200 and inline.mimetype == "image/png"
    assert inline.headers["Content-Disposition"].startswith("inline;")
    frame = client.page(f"/messages/{message.id}/html").html
    assert f'src="/attachments/{png.id}/inline"' in frame and "cid:" not in frame
    assert client.raw.get("/attachments/999999").status_code == 404


def test_raw_source_downloads_as_received(instance: Instance) -> None:
    raw = mail("Raw please", "Exactly these bytes.")
    result = instance.deliver(raw)
    with instance.runtime.sessions() as session:
        message_id = session.scalar(select(Message.id).where(Message.ticket_id == result.ticket))
    answer = instance.client().raw.get(f"/messages/{message_id}/raw")
    assert answer.status_code == 200 and answer.data == raw
    assert answer.headers["Content-Disposition"].startswith(
        f'attachment; filename="message-{message_id}.eml"')


def test_properties_change_through_the_domain_operations(instance: Instance) -> None:
    result = instance.deliver(mail("Change me", "Please triage."))
    client = instance.client(AGENT)
    client.post(f"/tickets/{result.ticket}/properties",
                {"status": "pending", "priority": "high", "queue": "Support", "assignee": "me",
                 "tags": "Billing, vip"}, status=302)
    changed = ticket(instance, result.ticket)
    assert (changed.status, changed.priority, changed.assignee.email) == ("pending", "high", AGENT)
    assert [t.name for t in changed.tags] == ["billing", "vip"]
    assert {"status", "priority", "assigned", "tags"} <= set(kinds(instance, result.ticket))
    client.post(f"/tickets/{result.ticket}/properties", {"status": "bogus"}, status=400)
    client.post(f"/tickets/{result.ticket}/properties", {"assignee": "99999"}, status=400)
    client.post(f"/tickets/{result.ticket}/properties", {"assignee": "none"}, status=302)
    assert ticket(instance, result.ticket).assignee_id is None
    page = client.page(f"/tickets/{result.ticket}").html
    assert "Bob Agent" in page[page.index('id="history-title"'):]


def test_merge_moves_messages_and_the_old_address_leads_to_the_target(instance: Instance) -> None:
    duplicate = instance.deliver(mail("Same problem", "Duplicate report."))
    target = instance.deliver(mail("Same problem again", "Original report."))
    client = instance.client()
    client.post(f"/tickets/{duplicate.ticket}/merge", {"target": f"#{target.ticket}"}, status=302)
    merged = ticket(instance, duplicate.ticket)
    assert merged.merged_into_id == target.ticket and merged.status == "closed"
    answer = client.raw.get(f"/tickets/{duplicate.ticket}")
    assert answer.status_code == 302 and answer.headers["Location"].endswith(
        f"/tickets/{target.ticket}")
    page = client.page(f"/tickets/{target.ticket}").html
    assert "Duplicate report." in page and "Original report." in page
    assert EventKind.MERGED in kinds(instance, target.ticket)
    answer = client.post(f"/tickets/{target.ticket}/merge", {"target": str(target.ticket)})
    assert answer.status_code == 302  # refused, with the reason shown
    assert "cannot be merged into itself" in client.page(f"/tickets/{target.ticket}").html


def test_a_message_splits_off_or_moves_with_an_event(instance: Instance) -> None:
    home = instance.deliver(mail("Order 1", "First order.", message_id="<o1@c.example>"))
    instance.deliver(mail("Re: Order 1", "Unrelated: my address changed.",
                          in_reply_to="<o1@c.example>"))
    elsewhere = instance.deliver(mail("Order 2", "Second order."))
    with instance.runtime.sessions() as session:
        stray = session.scalars(select(Message.id).where(Message.ticket_id == home.ticket)
                                .order_by(Message.id)).all()[-1]
    client = instance.client()
    answer = client.post(f"/messages/{stray}/split", status=302)
    new_id = int(answer.headers["Location"].rsplit("/", 1)[1])
    assert new_id not in (home.ticket, elsewhere.ticket)
    assert "my address changed" in client.page(f"/tickets/{new_id}").html
    assert "my address changed" not in client.page(f"/tickets/{home.ticket}").html
    assert EventKind.SPLIT in kinds(instance, new_id)
    client.post(f"/messages/{stray}/move", {"target": str(elsewhere.ticket)}, status=302)
    assert "my address changed" in client.page(f"/tickets/{elsewhere.ticket}").html
    assert EventKind.MESSAGE_MOVED in kinds(instance, elsewhere.ticket)
    client.post(f"/messages/{stray}/move", {"target": "not-a-number"}, status=400)


def test_a_note_is_shown_apart_and_never_mailed_and_a_resubmission_adds_it_once(
        instance: Instance) -> None:
    result = instance.deliver(mail("Note me", "Hello."))
    client = instance.client(AGENT)
    key = client.page(f"/tickets/{result.ticket}").field("key")
    for _ in range(2):  # a double click
        client.post(f"/tickets/{result.ticket}/note", {"note": "Customer is a VIP.", "key": key},
                    status=302)
    with instance.runtime.sessions() as session:
        notes = session.scalars(select(Message).where(Message.ticket_id == result.ticket,
                                                      Message.direction == "note")).all()
        assert len(notes) == 1
        assert session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.message_row_id == notes[0].id)) == 0
    page = client.page(f"/tickets/{result.ticket}").html
    assert re.search(r'class="msg msg-note[^"]*"', page) and "Internal note" in page
    client.post(f"/tickets/{result.ticket}/note", {"note": "", "key": key}, status=400)


def test_a_post_without_csrf_token_is_refused(instance: Instance) -> None:
    result = instance.deliver(mail("Csrf", "Hello."))
    client = instance.client(AGENT)
    key = client.page(f"/tickets/{result.ticket}").field("key")
    answer = client.post(f"/tickets/{result.ticket}/note", {"note": "forged", "key": key},
                         csrf=False)
    assert answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)
    client.post(f"/tickets/{result.ticket}/properties", {"status": "closed"}, csrf=False,
                status=400)
    assert ticket(instance, result.ticket).status == "new"
    assert "forged" not in client.page(f"/tickets/{result.ticket}").html


def test_other_viewers_are_named_while_their_page_is_open(instance: Instance) -> None:
    result = instance.deliver(mail("Presence", "Who is here?"))
    bob, carol = instance.client(AGENT), instance.client(OTHER)
    bob.page(f"/tickets/{result.ticket}")
    assert "Bob Agent is also viewing this ticket." in carol.page(f"/tickets/{result.ticket}").html
    state = bob.post(f"/tickets/{result.ticket}/presence", {"composing": "1"}, status=200)
    assert state.get_json()["viewers"] == [{"name": "Carol Agent", "composing": False}]
    assert carol.post(f"/tickets/{result.ticket}/presence", status=200).get_json()[
        "viewers"] == [{"name": "Bob Agent", "composing": True}]
    bob.post(f"/tickets/{result.ticket}/presence", {"leave": "1"}, status=200)
    assert "Bob Agent is also viewing" not in carol.page(f"/tickets/{result.ticket}").html


def test_canned_responses_fill_in_ticket_and_contact(instance: Instance) -> None:
    result = instance.deliver(mail("Refund please", "Charged twice."))
    client = instance.client(AGENT)
    text = client.raw.get(f"/tickets/{result.ticket}/canned/refund-issued").get_json()["text"]
    assert text.startswith("Hello Anna Schmidt,") and f"[ACME #{result.ticket}]" in text
    assert text.rstrip().endswith("Bob Agent")
    page = client.page(f"/tickets/{result.ticket}?canned=need-details").html
    assert "So that we can look into it" in page[page.index('id="reply-text"'):]
    assert client.raw.get(f"/tickets/{result.ticket}/canned/nope").get_json() == {"text": ""}
    page = client.page(f"/tickets/{result.ticket}?canned=../web/base").html  # listed names only
    assert re.search(r'id="reply-text"[^>]*>\s*</textarea>', page)


def test_unknown_ticket_and_message_are_404(instance: Instance) -> None:
    client = instance.client(ADMIN)
    for path in ("/tickets/999999", "/messages/999999/html", "/messages/999999/raw"):
        assert client.raw.get(path).status_code == 404


def test_assigning_someone_else_mails_them_a_notice_and_taking_it_yourself_does_not(
        instance: Instance) -> None:
    result = instance.deliver(mail("Assign me", "Who takes this?"))

    def notices_to(email: str) -> int:
        with instance.runtime.sessions() as session:
            rows = session.scalars(select(Outbox).where(Outbox.ticket_id == result.ticket,
                                                        Outbox.kind == "notification"))
            return sum(email in row.recipients for row in rows)

    before = notices_to(OTHER), notices_to(AGENT)
    client = instance.client(AGENT)
    with instance.runtime.sessions() as session:
        carol = session.scalar(select(Agent).where(Agent.email == OTHER))
    client.post(f"/tickets/{result.ticket}/properties", {"assignee": str(carol.id)}, status=302)
    assert notices_to(OTHER) == before[0] + 1
    client.post(f"/tickets/{result.ticket}/properties", {"assignee": "me"}, status=302)
    assert notices_to(AGENT) == before[1]  # took it themselves: no mail to themselves
