"""Alembic migrations of the result store (a package so that they ship in the wheel)."""
