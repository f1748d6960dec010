"""Periodic work in `mailgateway run`: APScheduler 3 in a background thread.

The outbox sweep wakes the sender (retries that came due, rows whose sender died and whose
lease ran out); the purge drops sent outbox rows past their use once a day.
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from mailgateway.runtime import Runtime
from mailgateway.sender import Sender
from mailgateway.service import Service
from models import outbox
from models.schema import utcnow

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10
PURGE_SENT_AFTER_DAYS = 30


def purge_sent(runtime: Runtime, days: int = PURGE_SENT_AFTER_DAYS) -> int:
    with runtime.sessions.begin() as session:
        count = outbox.purge(session, older_than=utcnow() - timedelta(days=days))
    if count:
        log.info("purged %d sent outbox rows older than %d days", count, days)
    return count


def scheduler_for(runtime: Runtime, sender: Sender) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(sender.wake, "interval", seconds=SWEEP_SECONDS, id="outbox-sweep",
                      coalesce=True, max_instances=1)
    scheduler.add_job(purge_sent, "interval", hours=24, args=[runtime], id="outbox-purge",
                      coalesce=True, max_instances=1)
    return scheduler


def sender_service(runtime: Runtime, sender: Sender) -> Service:
    """The sender thread and the scheduler that sweeps for it, as one service."""
    scheduler = scheduler_for(runtime, sender)

    def start() -> None:
        sender.start()
        scheduler.start()
        log.info("sender started (%s)", runtime.settings.outbound.transport)

    def stop() -> None:
        scheduler.shutdown(wait=False)
        sender.stop()

    return Service("sender", start, stop)
