"""The result store: predictions and API keys in SQLite (default) or PostgreSQL."""

from service.store.database import Database
from service.store.ids import new_id
from service.store.migrate import upgrade

__all__ = ["Database", "new_id", "upgrade"]
