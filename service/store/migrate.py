"""Alembic, configured in code: the migrations ship inside the package, no alembic.ini needed.

Migrations run once however many replicas start at the same moment: on PostgreSQL the upgrade
holds a session advisory lock (``pg_advisory_lock``), so a second migrator waits, then finds the
schema current and does nothing; on SQLite a file lock beside the database does the same. A
replica told not to migrate (``GGA_RUN_MIGRATIONS=false``) waits for the schema to reach head.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from models.errors import GGAUserError

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number; every gga-serve process uses this one to serialise migrations.
ADVISORY_LOCK_KEY = 0x67_67_61_5F_6D_69_67  # "gga_mig"

logger = logging.getLogger(__name__)


class SchemaNotCurrent(GGAUserError):
    """The store's schema is not at the revision this code needs."""


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the database ``url``.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///gga.db`` or ``postgresql+psycopg://…``.

    Returns:
        The config, usable with any ``alembic.command`` function.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates '%': URL-escaped passwords would otherwise break.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Keep the caller's logging configuration; env.py must not call fileConfig.
    cfg.attributes["configure_logging"] = False
    return cfg


@contextlib.contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the store's migration lock: a PostgreSQL advisory lock, or a file lock for SQLite.

    Args:
        url: SQLAlchemy URL of the store.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.commit()  # a session-level lock outlives this transaction
                try:
                    yield
                finally:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    conn.commit()
        finally:
            engine.dispose()
        return
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating the tables on a new database).

    Safe to run from several processes at once: they take turns under :func:`migration_lock`.

    Args:
        url: SQLAlchemy URL.
        revision: Target revision; ``head`` is the newest.
    """
    logger.info("migrating result store to %s", revision)
    with migration_lock(url):
        command.upgrade(alembic_config(url), revision)


def head() -> str:
    """The newest revision the packaged migrations define."""
    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def wait_until_current(url: str, timeout_s: float, poll_s: float = 1.0) -> None:
    """Wait for another process (the migrate job) to bring the schema to head.

    Args:
        url: SQLAlchemy URL.
        timeout_s: Longest to wait.
        poll_s: Seconds between checks.

    Raises:
        SchemaNotCurrent: Still not at head after ``timeout_s``.
    """
    wanted = head()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = current(url)
        except Exception as err:  # the database may still be starting
            found = f"unreachable ({type(err).__name__})"
        if found == wanted:
            return
        if time.monotonic() >= deadline:
            raise SchemaNotCurrent(
                f"the result store's schema is {found or 'empty'}, this release needs {wanted}; "
                "run `gga db upgrade` (the compose stack's `migrate` job), or set "
                "GGA_RUN_MIGRATIONS=true on one replica"
            )
        logger.info("waiting for the store's schema to reach %s (now %s)", wanted, found)
        time.sleep(poll_s)
