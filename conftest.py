"""Fixtures for every test folder (tests/ and examples/): one Apache Kafka per test session.

In CI (CI=true) a broker that cannot start fails the test instead of skipping it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from payevents.localkafka import LocalKafka, fresh_channel

sys.path.insert(0, str(Path(__file__).parent / "tests"))  # the tests' helpers (pytest puts it there too, later)
from ci_rule import missing


@pytest.fixture(scope="session")
def kafka_session() -> Iterator[LocalKafka]:
    """One Apache Kafka (the release pinned in tools/kafka/pom.xml, single-node KRaft, free loopback ports,
    a temporary data dir) for the whole test session."""
    try:
        broker = LocalKafka().start()
    except Exception as exc:
        missing(f"Apache Kafka ({exc})")
        raise
    yield broker
    broker.stop()


@pytest.fixture
def kafka_broker(kafka_session: LocalKafka) -> LocalKafka:
    """The session's broker with a fresh channel: the test starts with no ``payments.{env}.events`` (nor its
    dead-letter channel) of any env, so it sees only the records it produces (group ids are per test too)."""
    fresh_channel(kafka_session.bootstrap)
    return kafka_session
