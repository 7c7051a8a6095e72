"""Fixtures of the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from payevents.settings import Settings
from payevents.transport import Transport, open_transport


@pytest.fixture
def transport(transport_settings: Settings) -> Iterator[Transport]:
    """The transport under test (embedded or Apache Kafka), closed afterwards."""
    t = open_transport(transport_settings)
    yield t
    t.close()
