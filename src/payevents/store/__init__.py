"""Databases: one per service (SQLite file by default, a PostgreSQL schema in production)."""

from payevents.store.db import Migration, connect, engine_for, migrate

__all__ = ["Migration", "connect", "engine_for", "migrate"]
