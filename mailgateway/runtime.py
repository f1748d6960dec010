"""What every command and service needs once settings are read: database, sessions, blob store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailgateway.config import Settings
from models.db import make_engine, make_read_sessions, make_sessions
from models.store import BlobStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    reads: sessionmaker[Session]  # take no write lock: SQLite readers run beside the writer

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.database.url,
                         busy_timeout_ms=settings.database.busy_timeout_ms)
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    return Runtime(settings, engine, make_sessions(engine), BlobStore(settings.storage.path),
                   make_read_sessions(engine))
