"""Exactly one poller per account when several gateway processes share a PostgreSQL
database: a session-level advisory lock, held on a connection of its own for as long as
the process polls. When the holder dies its connection closes, PostgreSQL releases the
lock, and a waiting process takes it on its next try. SQLite means one process: no lock."""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from models.db import is_sqlite

log = logging.getLogger(__name__)

# The key covers the schema too: installations sharing one database in separate schemas
# must not block each other's accounts.
KEY = "hashtextextended('mailgateway.imap:' || current_schema() || ':' || :name, 0)"


class AccountLock:
    def __init__(self, engine: Engine, account: str) -> None:
        self.engine, self.account = engine, account
        self.connection: Connection | None = None

    @property
    def needed(self) -> bool:
        return not is_sqlite(self.engine)

    def acquire(self) -> bool:
        """True when this process may poll the account now. SQLAlchemyError when the
        database cannot be asked: the poller waits and tries again."""
        if not self.needed:
            return True
        if self.connection is not None:
            return self.held()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.execute(text(f"SELECT pg_try_advisory_lock({KEY})"),
                                     {"name": self.account}).scalar()
        except SQLAlchemyError:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self.connection = connection
        return True

    def held(self) -> bool:
        """Still ours: the session holding it is alive. If it died (database restart,
        network), another process may poll already: stop and try to take it again."""
        if not self.needed:
            return True
        if self.connection is None:
            return False
        try:
            self.connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            log.warning("imap %s: lost the poller lock's database connection", self.account)
            self._drop()
            return False

    def release(self) -> None:
        if self.connection is None:
            return
        with contextlib.suppress(SQLAlchemyError):
            self.connection.execute(text(f"SELECT pg_advisory_unlock({KEY})"),
                                    {"name": self.account})
        self._drop()

    def _drop(self) -> None:
        """Close the database session for real: a pooled connection would keep the lock."""
        connection, self.connection = self.connection, None
        with contextlib.suppress(SQLAlchemyError):
            connection.invalidate()  # type: ignore[union-attr]
            connection.close()  # type: ignore[union-attr]

    def taken_elsewhere(self) -> bool | None:
        """For `imap status`: does some process hold the lock now? None on SQLite."""
        if not self.needed:
            return None
        if self.acquire():
            self.release()
            return False
        return True
