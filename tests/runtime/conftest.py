"""Fixtures of the consumer-runtime tests: a counter service unique to each test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import runtime_counter

from payevents.runtime.service import ServiceDef


@pytest.fixture
def counter(unique: str) -> Iterator[ServiceDef]:
    """The ``_counter`` service under a name (and so a consumer group) of its own."""
    yield runtime_counter.service(f"_counter_{unique}")


@pytest.fixture
def batch_counter(unique: str) -> Iterator[ServiceDef]:
    """The ``_counter`` service with its batch handler, under a name of its own."""
    yield runtime_counter.service(f"_bcounter_{unique}", batch=True)
