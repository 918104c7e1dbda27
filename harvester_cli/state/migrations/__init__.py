"""Alembic migration scripts of the state database, shipped with the package (see state/upgrade.py)."""
