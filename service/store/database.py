"""The store's engine and sessions: SQLite in WAL mode by default, PostgreSQL by URL."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.store.migrate import upgrade

logger = logging.getLogger(__name__)
# Seconds to open a PostgreSQL connection, or to wait for a free one in the pool.
CONNECT_TIMEOUT_S = 5


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers (the list endpoints) run while the batcher writes; synchronous=NORMAL in
    # WAL mode survives a killed process (only power loss can drop the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings the service relies on.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://…``).

    Returns:
        The engine.
    """
    if url.startswith("sqlite"):
        # The batcher writes from its worker thread and endpoints read from the thread pool.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A server that does not answer (a partition, a host gone) must fail a request in seconds,
    # not hold it for the system's TCP timeout of minutes: the request is then answered 503.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=CONNECT_TIMEOUT_S,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


class Database:
    """One database: its engine, a session factory and the schema migration.

    Args:
        url: SQLAlchemy URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Create or migrate the tables (Alembic ``upgrade head``)."""
        upgrade(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name
