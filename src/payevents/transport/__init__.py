"""Transports: the embedded SQLite log (default) and Kafka."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from payevents.errors import ConfigError
from payevents.transport.base import (
    DEFAULT_MAX_RECORD_BYTES,
    Consumer,
    Delivery,
    Message,
    Producer,
    Record,
    Skipped,
    TopicInfo,
    Transport,
)

if TYPE_CHECKING:
    from payevents.settings import Settings

__all__ = [
    "Consumer", "Delivery", "Message", "Producer", "Record", "Skipped", "TopicInfo", "Transport", "open_transport",
]


def open_transport(settings: Settings) -> Transport:
    """The transport chosen by ``settings.broker``: ``embedded`` (``{data_dir}/channel.db``) or
    ``kafka://host:port,...`` (confluent-kafka; ``settings.kafka_config`` passed through unchanged).

    On the embedded log, ``session.timeout.ms`` and ``heartbeat.interval.ms`` in ``kafka_config`` (if
    given) set the group lease timing too, and ``message.max.bytes`` the largest record it accepts;
    ``settings.retention_ms`` (PAYEVENTS_RETENTION_MS) is its retention and ``offsets.retention.minutes`` how
    long an abandoned group's offsets are kept (Kafka's broker setting of that name; 7 days by default)."""
    settings.validate()
    if settings.is_kafka:
        from payevents.transport.kafka import KafkaTransport

        return KafkaTransport(settings.bootstrap_servers, settings.kafka_config)
    from payevents.transport.embedded import EmbeddedTransport

    knobs = embedded_knobs(settings.kafka_config)
    return EmbeddedTransport(settings.data_dir / "channel.db", session_timeout=knobs.session_timeout_s,
                             heartbeat_interval=knobs.heartbeat_interval_s, max_record_bytes=knobs.max_record_bytes,
                             retention_ms=settings.retention_ms, offsets_retention_ms=knobs.offsets_retention_ms)


@dataclasses.dataclass(frozen=True)
class EmbeddedKnobs:
    session_timeout_s: float
    heartbeat_interval_s: float
    max_record_bytes: int
    offsets_retention_ms: int


#: the Kafka settings the embedded log also takes from ``PAYEVENTS_KAFKA_CONFIG``: (unit, low, high) — librdkafka's
#: own ranges for its properties, so a value is refused alike on both transports; minutes for the broker's
#: ``offsets.retention.minutes`` (at most 100 years)
_EMBEDDED_KNOBS: Final = {
    "session.timeout.ms": ("milliseconds", 1, 3_600_000),
    "heartbeat.interval.ms": ("milliseconds", 1, 3_600_000),
    "message.max.bytes": ("bytes", 1000, 1_000_000_000),
    "offsets.retention.minutes": ("minutes", 1, 52_560_000),
}


def embedded_knobs(cfg: Mapping[str, str]) -> EmbeddedKnobs:
    """The embedded log's group timing, record limit and offsets retention from ``cfg``
    (``PAYEVENTS_KAFKA_CONFIG``); a value that is not a whole number in its range is a ConfigError naming it."""
    from payevents.transport.embedded import (
        DEFAULT_HEARTBEAT_INTERVAL,
        DEFAULT_OFFSETS_RETENTION_MS,
        DEFAULT_SESSION_TIMEOUT,
    )

    got: dict[str, int] = {}
    for key, (unit, low, high) in _EMBEDDED_KNOBS.items():
        raw = cfg.get(key)
        if raw is None:
            continue
        text = str(raw).strip()
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: {key}={str(raw)[:40]!r} must be a whole number of {unit}"
                              f" from {low:,} to {high:,}")
        got[key] = int(text)
    return EmbeddedKnobs(
        session_timeout_s=got.get("session.timeout.ms", DEFAULT_SESSION_TIMEOUT * 1000) / 1000,
        heartbeat_interval_s=got.get("heartbeat.interval.ms", DEFAULT_HEARTBEAT_INTERVAL * 1000) / 1000,
        max_record_bytes=got.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES),
        offsets_retention_ms=(got["offsets.retention.minutes"] * 60_000 if "offsets.retention.minutes" in got
                              else DEFAULT_OFFSETS_RETENTION_MS),
    )
