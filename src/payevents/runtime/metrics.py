"""Prometheus metrics of the consumer runtime, labelled by service.

Registered once per process in the default registry; ``payevents serve`` (or any exporter) exposes
them. The same figures are kept in :class:`payevents.runtime.consumer.ConsumerStats` for tests and
benchmarks.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "payevents_consumer_consumed", "Records polled from the channel (including duplicates and poison)", ["service"]
)
APPLIED = Counter("payevents_consumer_applied", "Events applied by a handler (exactly once per eventId)", ["service"])
DUPLICATES = Counter(
    "payevents_consumer_duplicates", "Records skipped because their eventId was already seen", ["service"]
)
ABSORBED = Counter(
    "payevents_consumer_absorbed",
    "Events absorbed as duplicates of a business fact already applied (same paymentId, eventType and content)",
    ["service"],
)
IGNORED = Counter(
    "payevents_consumer_ignored", "Events marked seen without a handler for their eventType", ["service"]
)
DEAD_LETTERED = Counter("payevents_consumer_dead_lettered", "Records sent to the dead-letter channel", ["service"])
RETRIES = Counter(
    "payevents_consumer_retries", "Batches rolled back and retried after a transient fault", ["service"]
)
LAG = Gauge("payevents_consumer_lag", "Records behind the end of the channel, per assigned partition",
            ["service", "partition"])
BATCH_LATENCY = Histogram(
    "payevents_consumer_batch_seconds",
    "Time to decode, apply, commit and acknowledge one batch",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
