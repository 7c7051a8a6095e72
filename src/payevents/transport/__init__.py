"""Transports: the embedded SQLite log (default) and Kafka."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payevents.settings import embedded_kafka_knobs
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
    from payevents.transport.embedded import (
        DEFAULT_HEARTBEAT_INTERVAL,
        DEFAULT_OFFSETS_RETENTION_MS,
        DEFAULT_SESSION_TIMEOUT,
        EmbeddedTransport,
    )

    knobs = embedded_kafka_knobs(settings.kafka_config)
    minutes = knobs.get("offsets.retention.minutes")
    return EmbeddedTransport(
        settings.data_dir / "channel.db",
        session_timeout=knobs.get("session.timeout.ms", DEFAULT_SESSION_TIMEOUT * 1000) / 1000,
        heartbeat_interval=knobs.get("heartbeat.interval.ms", DEFAULT_HEARTBEAT_INTERVAL * 1000) / 1000,
        max_record_bytes=knobs.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES),
        retention_ms=settings.retention_ms,
        offsets_retention_ms=DEFAULT_OFFSETS_RETENTION_MS if minutes is None else minutes * 60_000)
