"""Fixtures of the outbox tests."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from payevents.runtime.outbox import OUTBOX_MIGRATIONS
from payevents.settings import Settings
from payevents.store.db import connect


@pytest.fixture
def outbox_engine(store_settings: Settings) -> Engine:
    """The payments database (SQLite or PostgreSQL) with the outbox migrations applied."""
    return connect(store_settings, "payments", OUTBOX_MIGRATIONS)
