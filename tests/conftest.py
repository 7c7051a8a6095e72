"""Shared fixtures: settings per test, Apache Kafka (one single-node KRaft broker per session), local PostgreSQL.

In CI (CI=true) nothing may skip for a missing dependency: a broker, database or browser that is not
there fails the test instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_rule import missing
from payevents.bench.core import drop_schemas
from payevents.localkafka import FAST_GROUP_CONFIG
from payevents.settings import Settings
from payevents.store.db import dispose_engines

PG_URL = os.environ.get("PAYEVENTS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_available() -> str:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        missing(f"PostgreSQL at {PG_URL} ({type(exc).__name__})")
    return PG_URL


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Embedded broker, SQLite stores, everything under tmp_path."""
    yield Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    dispose_engines()


@pytest.fixture
def pg_settings(tmp_path: Path, pg_available: str) -> Iterator[Settings]:
    """Embedded broker, PostgreSQL stores in schemas unique to this test (dropped afterwards)."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield Settings(env="dev", data_dir=tmp_path / "data", database_url=pg_available,  # type: ignore[arg-type]
                   db_schema_prefix=prefix)
    dispose_engines()
    drop_schemas(PG_URL, prefix)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Runs the test once on SQLite and once on the local PostgreSQL."""
    if request.param == "sqlite":
        yield Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
        dispose_engines()
        return
    pg = request.getfixturevalue("pg_available")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield Settings(env="dev", data_dir=tmp_path / "data", database_url=pg, db_schema_prefix=prefix)  # type: ignore[arg-type]
    dispose_engines()
    drop_schemas(PG_URL, prefix)


@pytest.fixture
def kafka_settings(tmp_path: Path, kafka_broker: object) -> Iterator[Settings]:
    """Kafka (a fresh channel on the session's broker), SQLite stores."""
    yield Settings(env="dev", data_dir=tmp_path / "data", broker=kafka_broker.url,  # type: ignore[attr-defined,arg-type]
                   kafka_config=dict(FAST_GROUP_CONFIG))
    dispose_engines()


@pytest.fixture(params=["embedded", "kafka"])
def transport_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Runs the test once on the embedded log and once on Kafka (a fresh channel on the session's broker)."""
    if request.param == "embedded":
        yield Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    else:
        broker = request.getfixturevalue("kafka_broker")
        yield Settings(env="dev", data_dir=tmp_path / "data", broker=broker.url,  # type: ignore[arg-type]
                       kafka_config=dict(FAST_GROUP_CONFIG))
    dispose_engines()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for group ids and topic names."""
    return uuid.uuid4().hex[:8]
