"""One line per event on stderr; context (ticket, Message-ID, outbox id) goes in the message."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "waitress.queue", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
