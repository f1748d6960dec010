"""The inbox over HTTP on both databases: views and counts, filters, search, keyset pages,
bulk actions, the unread marker and what the live refresh polls."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from models import changes, search
from models.events import EventKind
from models.schema import Agent, Event, Ticket, utcnow
from models.tickets import open_ticket_shell
from tests.models.factories import default_queue
from tests.webui.conftest import ADMIN, AGENT, Instance, mail

ROW = re.compile(r'<tr data-href="/tickets/(\d+)"')


def ids(html: str) -> list[int]:
    return [int(i) for i in ROW.findall(html)]


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return found.group(1).replace("&amp;", "&") if found else None


def tickets(instance: Instance, count: int, *, tag: str, **values: object) -> list[int]:
    """Tickets made by the domain operations, tagged so a test finds only its own."""
    made = []
    with instance.runtime.sessions.begin() as session:
        actor = session.scalar(select(Agent).where(Agent.email == ADMIN))
        for n in range(count):
            ticket = open_ticket_shell(session, subject=f"{tag} {n}", queue=default_queue(session),
                                       requester_address=f"{tag}@customer.example")
            changes.set_tags(session, ticket, [tag], actor=actor)
            for name, value in values.items():
                setattr(ticket, name, value)
            made.append(ticket.id)
    return made


def test_inbox_needs_a_login(instance: Instance) -> None:
    client = instance.app.test_client()
    for path in ("/", "/inbox/updates", "/?q=invoice"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_rows_show_requester_subject_snippet_status_and_activity(instance: Instance) -> None:
    instance.deliver(mail("Printer on fire", "The printer in room 4 is on fire, please help."))
    page = instance.client().page("/?q=printer").html
    row = page[page.index("<tr data-href"):page.index("</tr>", page.index("<tr data-href"))]
    for shown in ("Anna Schmidt", "Printer on fire", "The printer in room 4 is on fire",
                  "status-new", "normal", "Support", "now"):
        assert shown in row
    assert 'class="unread"' in row  # the customer wrote and this agent has not looked


def test_sidebar_counts_follow_assignments_and_statuses(instance: Instance) -> None:
    client = instance.client(AGENT)
    before = client.raw.get("/inbox/updates").get_json()
    [mine, loose, done] = tickets(instance, 3, tag="counting")
    with instance.runtime.sessions.begin() as session:
        bob = session.scalar(select(Agent).where(Agent.email == AGENT))
        changes.assign(session, session.get(Ticket, mine), bob, actor=bob)
        changes.change_status(session, session.get(Ticket, done), "solved", actor=bob)
    after = client.raw.get("/inbox/updates").get_json()
    delta = {k: after["counts"][k] - before["counts"][k] for k in after["counts"]}
    assert delta["mine"] == 1 and delta["unassigned"] == 1 and delta["open"] == 2
    assert delta["status-new"] == 2 and delta["status-solved"] == 1
    assert after["version"] != before["version"]
    assert f'data-count="mine">{after["counts"]["mine"]}<' in client.page("/").html
    assert ids(client.page("/?view=mine&tag=counting").html) == [mine]
    assert ids(client.page("/?view=unassigned&tag=counting").html) == [loose]
    assert ids(client.page("/?view=status-solved&tag=counting").html) == [done]
    assert loose not in ids(client.page("/?view=mine").html)


def test_filters_by_status_priority_assignee_and_tag(instance: Instance) -> None:
    [urgent, low] = tickets(instance, 2, tag="filtering")
    with instance.runtime.sessions.begin() as session:
        eve = session.scalar(select(Agent).where(Agent.email == ADMIN))
        changes.change_priority(session, session.get(Ticket, urgent), "urgent", actor=eve)
        changes.change_priority(session, session.get(Ticket, low), "low", actor=eve)
        changes.assign(session, session.get(Ticket, low), eve, actor=eve)
    client = instance.client()
    assert ids(client.page("/?tag=filtering&priority=urgent").html) == [urgent]
    assert ids(client.page(f"/?tag=filtering&assignee={eve.id}").html) == [low]
    assert ids(client.page("/?tag=filtering&assignee=none").html) == [urgent]
    assert ids(client.page("/?tag=filtering&status=closed").html) == []
    assert ids(client.page("/?tag=FILTERING&sort=priority").html) == [urgent, low]
    assert ids(client.page("/?tag=no-such-tag").html) == []


def test_search_finds_words_of_subject_body_and_the_requester_address(instance: Instance) -> None:
    body = instance.deliver(mail("Quarterly report", "The spreadsheet shows a flamingo column.",
                                 sender="zoe@wildlife.example", name="Zoe"))
    other = instance.deliver(mail("Something else", "Nothing to see."))
    client = instance.client()
    assert ids(client.page("/?q=flamingo").html) == [body.ticket]
    assert ids(client.page("/?q=Flamingo+column").html) == [body.ticket]
    assert ids(client.page("/?q=quarterly").html) == [body.ticket]
    assert ids(client.page("/?q=zoe@wildlife.example").html) == [body.ticket]
    assert ids(client.page("/?q=flamingo+nothing").html) == []  # every word must match
    assert other.ticket in ids(client.page("/?q=nothing").html)
    assert "No ticket matches" in client.page("/?q=okapi").html
    for hostile in ('"', "a* OR NEAR(", "'; DROP TABLE ticket; --", "-", "&&&", "(((("):
        client.page("/?q=" + hostile.replace("&", "%26"))  # plain words, never query syntax


def test_a_common_word_finds_the_same_tickets_by_walking_them_in_order(
        instance: Instance, monkeypatch) -> None:
    """SQLite walks the tickets and probes their messages when a word matches very many
    messages (search.COMMON); the answer must not depend on which way was taken."""
    made = [instance.deliver(mail(f"Walrus {n}", f"A walrus report, number {n}.")).ticket
            for n in range(3)]
    client = instance.client()
    listed = ids(client.page("/?q=walrus").html)
    monkeypatch.setattr(search, "COMMON", 1)
    assert ids(client.page("/?q=walrus").html) == listed == sorted(made, reverse=True)
    assert ids(client.page("/?q=walrus+number+1").html) == [made[1]]


def test_keyset_pages_walk_every_ticket_once_both_ways(instance: Instance) -> None:
    moment = utcnow() - timedelta(days=3)
    made = tickets(instance, 120, tag="paging", updated_at=moment)  # all tied on the sort key
    client = instance.client()
    seen, url, pages = [], "/?tag=paging&view=status-new", []
    while url:
        html = client.page(url).html
        pages.append(url)
        seen += ids(html)
        url = link(html, "next")
    assert seen == sorted(made, reverse=True) and len(pages) == 3
    back, url = [], link(client.page(pages[-1]).html, "prev")
    while url:
        html = client.page(url).html
        back = ids(html) + back
        url = link(html, "prev")
    assert back == seen[:100]
    damaged = client.page("/?tag=paging&view=status-new&after=garbage~x").html
    assert ids(damaged) == seen[:50]  # a damaged cursor means the first page


def test_created_sort_pages_in_ticket_order(instance: Instance) -> None:
    made = tickets(instance, 60, tag="creation", updated_at=utcnow() - timedelta(days=9))
    client = instance.client()
    first = client.page("/?tag=creation&sort=created").html
    second = client.page(link(first, "next")).html
    assert ids(first) + ids(second) == sorted(made, reverse=True)
    assert ids(client.page(link(second, "prev")).html) == ids(first)


def test_priority_sort_pages_through_ranks(instance: Instance) -> None:
    urgent = tickets(instance, 30, tag="ranks", priority="urgent")
    low = tickets(instance, 40, tag="ranks", priority="low")
    client = instance.client()
    first = client.page("/?tag=ranks&sort=priority").html
    second = client.page(link(first, "next")).html
    assert ids(first) + ids(second) == sorted(urgent, reverse=True) + sorted(low, reverse=True)
    assert ids(client.page(link(second, "prev")).html) == ids(first)


def test_bulk_action_assigns_and_closes_with_an_event_each(instance: Instance) -> None:
    made = tickets(instance, 3, tag="bulky")
    client = instance.client(AGENT)
    client.post("/tickets/bulk", {"ids": made[:2], "action": "assign:me", "next": "/?tag=bulky"},
                status=302)
    client.post("/tickets/bulk", {"ids": made, "action": "status:closed"}, status=302)
    with instance.runtime.sessions() as session:
        rows = {t.id: t for t in session.scalars(select(Ticket).where(Ticket.id.in_(made)))}
        assert [rows[i].assignee.email if rows[i].assignee else None for i in made] == [
            AGENT, AGENT, None]
        assert {t.status for t in rows.values()} == {"closed"}
        kinds = session.scalars(select(Event.kind).where(Event.ticket_id == made[0])).all()
        assert EventKind.ASSIGNED in kinds and EventKind.STATUS in kinds
    assert client.post("/tickets/bulk", {"ids": made, "action": "status:bogus"}).status_code == 400
    assert client.post("/tickets/bulk", {"ids": made, "action": "assign:me"},
                       csrf=False).status_code == 400


def test_unread_marker_clears_when_the_agent_opens_the_ticket(instance: Instance) -> None:
    result = instance.deliver(mail("Unread check", "Is anyone there?"))
    client = instance.client(AGENT)
    row = f'<tr data-href="/tickets/{result.ticket}" data-id="{result.ticket}" class="unread"'
    assert row in client.page("/?q=anyone").html
    client.page(f"/tickets/{result.ticket}")
    assert row not in client.page("/?q=anyone").html
    assert row in instance.client(ADMIN).page("/?q=anyone").html  # per agent


def test_the_polled_version_changes_when_mail_arrives(instance: Instance) -> None:
    client = instance.client()
    before = client.raw.get("/inbox/updates").get_json()
    result = instance.deliver(mail("Fresh arrival", "Just in."))
    after = client.raw.get("/inbox/updates").get_json()
    assert after["version"] != before["version"]
    assert after["counts"]["open"] == before["counts"]["open"] + 1
    rows = client.page("/?partial=rows").html
    assert f"/tickets/{result.ticket}" in rows and "<html" not in rows
