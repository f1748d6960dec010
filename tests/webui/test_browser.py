"""The web inbox in headless Chromium on both databases: logging in, the keyboard, the live
list, mail that tries to run or phone home, two agents on one ticket, the admin pages, an
accessibility check on every page, and the screenshots the README shows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from models import users
from tests.webui.browser import assert_accessible, log_in, screenshot
from tests.webui.conftest import ADMIN, AGENT, PASSWORD, Served, mail

HOSTILE_HTML = ('<p>Hello, please see the <b>invoice</b> below.</p>'
                '<script>window.pwned=1</script><img src="x" onerror="window.pwned=2">'
                '<img src="http://tracker.test/pixel.gif" alt="tracking pixel">')


@pytest.fixture(scope="module")
def tickets(served: Served) -> dict[str, int]:
    """A small, realistic inbox: a conversation, a hostile HTML mail, a few more requests."""
    deliver = served.instance.deliver
    first = deliver(mail("Invoice 2026-0412 charged twice",
                         "Hello,\n\nmy card was charged twice for invoice 2026-0412.\n"
                         "Could you refund one of the charges?\n\nThanks,\nAnna",
                         message_id="<conv-1@customer.example>"))
    attribution = "On Mon, 2 Nov 2026 at 09:12, Anna Schmidt <anna@customer.example> wrote:"
    quoted = "\n".join(f"> {line}" for line in (
        "Hello,", "", "my card was charged twice for invoice 2026-0412.",
        "Could you refund one of the charges?", "", "Thanks,", "Anna"))
    deliver(mail("Re: Invoice 2026-0412 charged twice",
                 "Any news? The second charge is still on my statement.\n\n"
                 f"{attribution}\n{quoted}",
                 in_reply_to="<conv-1@customer.example>",
                 cc=("Bob Lee <bob@shop.example>",)))
    hostile = deliver(mail("Your invoice is ready", "Plain part.", html=HOSTILE_HTML,
                           sender="billing@vendor.example", name="Vendor Billing"))
    for subject, sender, body in (
            ("Cannot log in after password reset", "carl@shop.example",
             "I reset my password this morning and now the login page says my account is locked."),
            ("Export to CSV drops accents", "chloe@agence.example",
             "When I export my contacts to CSV, names like Chloé become ChloÃ©."),
            ("Feature request: dark mode", "dmitri@studio.example",
             "Our team works late; a dark theme would be easier on the eyes.")):
        deliver(mail(subject, body, sender=sender, name=sender.split("@")[0].capitalize()))
    return {"conversation": first.ticket, "hostile": hostile.ticket}


@pytest.fixture(scope="module")
def logins(served: Served, browser) -> Callable[[str], dict]:
    """Each agent logs in once for the module; a test opens fresh contexts with the cookies."""
    states: dict[str, dict] = {}

    def state(email: str) -> dict:
        if email not in states:
            context = browser.new_context()
            log_in(context.new_page(), served.base, email)
            states[email] = context.storage_state()
            context.close()
        return states[email]

    return state


def open_as(browser, served: Served, logins, email: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860},
                                  storage_state=logins(email))
    page = context.new_page()
    page.goto(f"{served.base}/")
    return page


@pytest.fixture
def eve(served: Served, browser, logins) -> Iterator:
    page = open_as(browser, served, logins, ADMIN)
    yield page
    page.context.close()


def test_wrong_password_is_refused_and_the_login_page_is_accessible(served: Served, browser
                                                                    ) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served.base}/")
    assert page.url.startswith(f"{served.base}/login")
    assert_accessible(page)
    page.fill("#email", ADMIN)
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator(".flash.error").inner_text() == "Wrong email or password."
    assert "/login" in page.url
    log_in(page, served.base, ADMIN)
    assert page.locator("h1").inner_text().startswith("All open")
    context.close()


def test_inbox_keyboard_moves_opens_and_explains_itself(eve, served: Served, tickets, tmp_path
                                                         ) -> None:
    page = eve
    assert_accessible(page)
    screenshot(page, "inbox", tmp_path)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    current = page.locator("tr.current")
    assert current.count() == 1
    assert current.get_attribute("data-id") == page.locator("tr[data-href]").first.get_attribute(
        "data-id")
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    assert_accessible(page)
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("accents")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*q=accents"))
    assert page.locator("tr[data-href]").count() == 1
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(re.compile(r".*/tickets/\d+$"))
    assert page.locator("h1").inner_text() == "Export to CSV drops accents"


def test_new_mail_shows_up_without_a_reload(eve, served: Served, tickets) -> None:
    page = eve
    page.clock.install()
    page.goto(f"{served.base}/")
    page.evaluate("window.notReloaded = true")
    served.instance.deliver(mail("Brand new question", "Does the API support webhooks?"))
    page.clock.fast_forward(16_000)  # the next poll
    page.locator("tr[data-href]", has_text="Brand new question").wait_for()
    assert page.evaluate("window.notReloaded") is True
    assert "updated" in page.locator("[data-live-note]").inner_text()


def test_ticket_shortcuts_reply_note_assign_and_solve(eve, served: Served, tickets) -> None:
    page = eve
    page.goto(f"{served.base}/tickets/{tickets['conversation']}")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.message") == ""
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "reply-text"
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    assert page.evaluate("document.activeElement.id") == "note-text"
    page.keyboard.press("Escape")
    with page.expect_navigation():
        page.keyboard.press("a")
    assert "assigned to Eve Admin" in page.locator(".facts").inner_text()
    with page.expect_navigation():
        page.keyboard.press("s")
    assert page.locator(".facts .badge").inner_text() == "solved"


def test_hostile_html_mail_neither_runs_nor_loads_until_asked(eve, served: Served, tickets
                                                                ) -> None:
    page = eve
    remote: list[str] = []
    page.context.route("http://tracker.test/**", lambda route: (
        remote.append(route.request.url), route.fulfill(status=204)))
    page.goto(f"{served.base}/tickets/{tickets['hostile']}")
    page.locator("details.formatted summary").click()
    frame = page.frame_locator("iframe[name^=frame-]")
    frame.locator("text=invoice").wait_for()
    page.wait_for_timeout(300)  # time for an onerror handler or a pixel, were they live
    assert page.evaluate("window.pwned") is None
    handle = page.locator("iframe[name^=frame-]").element_handle().content_frame()
    assert handle.evaluate("window.pwned") is None
    assert remote == []
    assert_accessible(page)
    page.get_by_role("link", name="Show the images").click()
    page.wait_for_timeout(300)
    assert remote == ["http://tracker.test/pixel.gif"]  # only now, because the agent asked
    assert page.evaluate("window.pwned") is None


def test_admin_pages_are_accessible_and_closed_to_agents(served: Served, browser, eve) -> None:
    for path in ("/admin/", "/admin/quarantine", "/admin/agents", "/admin/settings"):
        eve.goto(f"{served.base}{path}")
        assert eve.locator("h1").count() == 1
        assert_accessible(eve)
    context = browser.new_context()
    page = context.new_page()
    log_in(page, served.base, AGENT)
    answer = page.goto(f"{served.base}/admin/agents")
    assert answer.status == 403 and "Not allowed" in page.locator("h1").inner_text()
    assert_accessible(page)
    context.close()


def test_two_agents_see_each_other_and_a_stale_reply_is_held(served: Served, browser, logins,
                                                              eve, tickets, tmp_path) -> None:
    url = f"{served.base}/tickets/{tickets['conversation']}"
    bob = open_as(browser, served, logins, AGENT)
    bob.clock.install()
    bob.goto(url)
    eve.clock.install()
    eve.goto(url)
    note = eve.locator("[data-presence-note]")
    assert note.inner_text() == "Bob Agent is also viewing this ticket."
    bob.fill("#reply-text", "Let me check with accounting.")
    bob.clock.fast_forward(16_000)  # Bob's heartbeat: he is writing
    eve.fill("#reply-text", "We refunded the second charge.")
    served.instance.deliver(mail("Re: Invoice 2026-0412 charged twice",
                                 "Update: my bank says the second charge was reversed.",
                                 in_reply_to="<conv-1@customer.example>"))
    eve.clock.fast_forward(16_000)  # Eve's heartbeat: who is here, and is there news
    eve.get_by_text("Bob Agent is also replying to this ticket.").wait_for()
    assert eve.locator("[data-arrived]").is_visible()
    eve.get_by_role("button", name="Send", exact=True).click()
    eve.wait_for_load_state()
    hold = eve.locator("#hold")
    assert "1 new message arrived while you were writing" in hold.inner_text()
    assert "second charge was reversed" in hold.inner_text()
    assert eve.input_value("#reply-text") == "We refunded the second charge."
    assert_accessible(eve)
    eve.fill("#reply-text", "Thanks, then all is well: nothing more to refund.")
    eve.get_by_role("button", name="Send anyway", exact=True).click()
    eve.wait_for_url(re.compile(r".*#m\d+$"))
    assert "Reply queued for anna@customer.example" in eve.locator(".flash").inner_text()
    assert "nothing more to refund" in eve.locator(".conversation").inner_text()
    bob.context.close()


def test_phone_sized_screens_get_one_column_without_sideways_scrolling(
        served: Served, browser, logins, tickets) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True,
                                  storage_state=logins(ADMIN))
    page = context.new_page()
    for path in ("/", f"/tickets/{tickets['conversation']}", "/admin/"):
        page.goto(f"{served.base}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        assert_accessible(page)
    context.close()


def test_the_forced_password_change_page_is_accessible(served: Served, browser) -> None:
    with served.instance.runtime.sessions.begin() as session:
        users.add_agent(session, "newbie@example.com", name="Newbie", password=PASSWORD,
                        must_change_password=True)
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served.base}/login")
    page.fill("#email", "newbie@example.com")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served.base}/password")
    assert_accessible(page)
    context.close()
