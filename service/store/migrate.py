"""Alembic, configured in code: the migrations ship inside the package, no alembic.ini needed."""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


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


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating the tables on a new database).

    Args:
        url: SQLAlchemy URL.
        revision: Target revision; ``head`` is the newest.
    """
    logging.getLogger(__name__).info("migrating result store to %s", revision)
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
