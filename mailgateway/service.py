"""`mailgateway run`: every enabled service in one process, stopped cleanly by SIGINT/SIGTERM."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mailgateway.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Something that runs beside the others: started in order, stopped in reverse."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], None]


def web_service(runtime: Runtime, wake_sender: Callable[[], None]) -> Service:
    from waitress.server import create_server

    from mailgateway.ingest import retry_quarantined
    from mailgateway.outbound_steps import followup_policy
    from webui import create_app

    web = runtime.settings.web
    app = create_app(runtime.settings, runtime.sessions, store=runtime.store,
                     wake_sender=wake_sender, followup_policy=followup_policy(runtime.settings),
                     retry_quarantined=functools.partial(retry_quarantined, runtime))
    server = create_server(app, host=web.host, port=web.port, threads=web.threads,
                           ident="mailgateway")
    thread = threading.Thread(target=server.run, name="web", daemon=True)

    def start() -> None:
        thread.start()
        log.info("web inbox on http://%s:%s/", web.host, server.effective_port)

    return Service("web", start, server.close)


def smtp_service(runtime: Runtime, wake_sender: Callable[[], None]) -> Service:
    from mailgateway.smtp import SmtpListener

    listener = SmtpListener(runtime, wake_sender=wake_sender)
    return Service("smtp", listener.start, listener.stop)


def build_services(runtime: Runtime) -> list[Service]:
    from mailgateway.jobs import sender_service
    from mailgateway.sender import Sender

    sender = Sender(runtime)  # first to start, last to stop: it sends what the others queue
    services = [sender_service(runtime, sender)]
    if runtime.settings.smtp.enabled:
        services.append(smtp_service(runtime, wake_sender=sender.wake))
    if any(account.enabled for account in runtime.settings.imap):
        from mailgateway.imap import imap_service

        services.append(imap_service(runtime))
    if runtime.settings.web.enabled:
        services.append(web_service(runtime, wake_sender=sender.wake))
    return services


def run_services(runtime: Runtime, stop_event: threading.Event | None = None) -> None:
    stop_event = stop_event or threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_event.set())
    started: list[Service] = []
    try:
        for service in build_services(runtime):
            service.start()
            started.append(service)
        log.info("mailgateway running (%s); stop with Ctrl-C",
                 ", ".join(s.name for s in started) or "nothing enabled")
        stop_event.wait()
        log.info("stopping")
    finally:
        for service in reversed(started):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 -- edge: one failing stop must not block the others
                log.exception("stopping %s failed", service.name)
    log.info("stopped")
