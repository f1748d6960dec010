"""The ingest path in a process of its own, for the SMTP listener.

In one process, aiosmtpd's event loop and the parsing share one interpreter lock: profiled
under 16 clients, the listener's process spent 39 % of its time in the batcher, 24 % in
the sender and 19 % in the event loop, on one core of two. Here the listener speaks SMTP
while a worker process parses and commits on the other core. The worker opens its own
runtime from config.toml; answers come back pickled. Nothing changes about when a
client hears 250: after the worker's commit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mailgateway.errors import TemporaryFailure
from mailgateway.ingest import IngestResult, Source, receive_batch
from mailgateway.runtime import Runtime

log = logging.getLogger(__name__)

_runtime: Runtime | None = None  # the worker's own


def _start_worker(config: str, log_level: int) -> None:
    """SIGINT and SIGTERM (Ctrl-C, and systemd's stop, reach the whole process group) are
    the parent's to handle: it stops the listener, then this process after its last batch.
    Should the parent die (SIGKILL), this process ends too: see _exit_with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="parent-watch",
                     daemon=True).start()
    from mailgateway.config import load_settings
    from mailgateway.logs import setup_logging
    from mailgateway.runtime import open_runtime

    global _runtime
    setup_logging(logging.getLevelName(log_level))
    _runtime = open_runtime(load_settings(config))


def _exit_with(parent: int) -> None:
    """The task queue cannot tell us the parent is gone (this process holds a copy of its
    writing end), so we look: an orphan would wait for work for ever. A batch cut short
    here rolls back; nobody was told 250 for it."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _ready() -> bool:
    return _runtime is not None


def _receive(items: Sequence[tuple[bytes, Source]]) -> list[IngestResult]:
    """Any failure goes back as TemporaryFailure with plain text: a database error may
    not survive pickling, and the client's answer is 451 either way."""
    try:
        return receive_batch(_runtime, items)
    except TemporaryFailure:
        raise
    except Exception as error:  # noqa: BLE001 -- edge: every message of the batch gets 451
        log.exception("ingest of %d messages failed", len(items))
        raise TemporaryFailure(f"ingest failed: {error!r}") from None


class IngestProcess:
    """receive_batch, run by one worker process that stays up; started by spawn, since the
    listener's process already runs threads that a fork would copy mid-step."""

    def __init__(self, runtime: Runtime) -> None:
        self.config = str(runtime.settings.path)
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker,
                                   initargs=(self.config, logging.getLogger().level))

    def start(self) -> None:
        """The worker comes up now, not with the first mail (importing takes a second)."""
        self.pool.submit(_ready).result()

    def receive_batch(self, items: Sequence[tuple[bytes, Source]]) -> list[IngestResult]:
        try:
            return self.pool.submit(_receive, list(items)).result()
        except BrokenProcessPool as error:  # killed (OOM, an admin): a new one for the next
            log.error("the ingest worker died (%s); starting another", error)
            broken, self.pool = self.pool, self._new_pool()
            broken.shutdown(wait=False, cancel_futures=True)
            raise TemporaryFailure("the ingest worker died") from error

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
