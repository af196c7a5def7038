"""Alembic migrations for the nobackfill schema (applied automatically at service start)."""
