"""The web inbox in headless Chromium on both databases: logging in, the keyboard, the live
list, mail that tries to run or phone home, two agents on one ticket, the admin pages, an
accessibility check on every page, and the screenshots the README shows."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.webui.browser import assert_accessible, log_in, screenshot
from tests.webui.conftest import ADMIN, AGENT, Served, mail

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
def eve_login(served: Served, browser) -> dict:
    """Eve logs in once for the module; each test opens a fresh context with her cookies."""
    context = browser.new_context()
    log_in(context.new_page(), served.base, ADMIN)
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def eve(served: Served, browser, eve_login: dict) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 860},
                                  storage_state=eve_login)
    page = context.new_page()
    page.goto(f"{served.base}/")
    yield page
    context.close()


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
