"""Dropping a run's PostgreSQL schemas (benchmarks, the soak, the test fixtures) drops the run's schemas only.

A prefix is matched as text: the ``_`` every prefix ends with is that character, not LIKE's "any one character",
so the cleanup of one run never reaches a schema whose name differs from the prefix in that position.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from payevents.bench.core import drop_schemas


def _schemas(url: str, like: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE %(p)s",
                                            {"p": like}).scalars())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_only_the_schemas_that_start_with_the_prefix_are_dropped(pg_available: str) -> None:
    tag = uuid.uuid4().hex[:10]
    prefix = f"t{tag}_"
    ours = {f"{prefix}payments", f"{prefix}ledger"}
    # what `LIKE 't<tag>_%'` also matches: another character where the prefix has `_`
    others = {f"t{tag}xpayments", f"t{tag}Xledger"}
    engine = sa.create_engine(pg_available)
    try:
        with engine.begin() as conn:
            for name in ours | others:
                conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        drop_schemas(pg_available, prefix)
        assert _schemas(pg_available, f"t{tag}%") == others
    finally:
        with engine.begin() as conn:
            for name in ours | others:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()
