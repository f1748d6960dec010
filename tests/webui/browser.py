"""What the browser tests share: logging in, the accessibility check, screenshots."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.webui.conftest import PASSWORD, ROOT

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
SCREENSHOTS = ROOT / "docs" / "screenshots"
REFRESH_SCREENSHOTS = os.environ.get("MAILGATEWAY_SCREENSHOTS") == "1"


def log_in(page, base: str, email: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def assert_accessible(page) -> None:  # type: ignore[no-untyped-def]
    """axe-core on the page as it is now: no serious or critical violation. Evaluated over
    the DevTools protocol, so the page's CSP (script-src 'self') stays on. Mail shown in
    frames is the sender's markup, not ours: left out."""
    page.evaluate(AXE)
    found = page.evaluate("""async () => {
        const result = await axe.run({exclude: [["iframe"]]}, {resultTypes: ["violations"]});
        return result.violations
          .filter((v) => ["serious", "critical"].includes(v.impact))
          .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map((n) => n.html)}));
    }""")
    assert found == [], f"{page.url}: {json.dumps(found, indent=1)}"


def screenshot(page, name: str, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    """docs/screenshots/<name>.png when asked to refresh them (make screenshots), else a
    throwaway copy: the test takes them either way, so the target cannot rot."""
    target = (SCREENSHOTS if REFRESH_SCREENSHOTS else folder) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000
    return target
