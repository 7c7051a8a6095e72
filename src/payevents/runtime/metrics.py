"""Prometheus metrics of the workers (consumer runtime, e-mail delivery, the worker itself).

Registered once per process in the default registry. Each worker process serves its own registry on
``/metrics`` of its announced port (:mod:`payevents.runtime.workers`); ``payevents serve`` exposes the
API process's. The relay's metrics live in :mod:`payevents.runtime.relay`. The same consumer figures
are kept in :class:`payevents.runtime.consumer.ConsumerStats` for tests and benchmarks.

Names follow Prometheus conventions: counters end in ``_total`` (prometheus-client appends it), durations
are in seconds, gauges carry no ``_total``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "payevents_consumer_consumed", "Records polled from the channel (including duplicates and poison)", ["service"]
)
#: every polled record ends with one outcome: applied, duplicate, absorbed (a repeat of a business fact already
#: applied, see runtime.facts), ignored or dead_lettered
RECORDS = Counter("payevents_consumer_records", "Records handled, by outcome", ["service", "outcome"])
#: ConsumerStats/BatchResult field -> outcome label of RECORDS
OUTCOMES = {"applied": "applied", "duplicates": "duplicate", "absorbed": "absorbed",
            "ignored": "ignored", "dead_lettered": "dead_lettered"}
RECORDS_LOST = Counter("payevents_consumer_records_lost", "Records the channel deleted (its retention) before this "
                       "service's group read them: never applied; alert on any", ["service"])
DEAD_LETTERED = Counter("payevents_consumer_dead_lettered", "Records sent to the dead-letter channel", ["service"])
RETRIES = Counter(
    "payevents_consumer_retries", "Batches rolled back and retried after a transient fault", ["service"]
)
LAG = Gauge("payevents_consumer_lag", "Records behind the end of the channel, per assigned partition "
            "(the series of a partition this member lost is removed)", ["service", "partition"])
BATCH_LATENCY = Histogram(
    "payevents_consumer_batch_duration_seconds",
    "Time to decode, apply, commit and acknowledge one batch",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# -- the e-mail delivery worker (notifications) ------------------------------------------------------------

EMAILS = Counter("payevents_notifications_emails", "Confirmation e-mails by delivery outcome", ["outcome"])
DELIVERY_PASS = Gauge("payevents_notifications_delivery_last_pass_timestamp_seconds",
                      "Unix time the delivery worker last finished a pass")
DELIVERY_PEAK_RSS = Gauge("payevents_notifications_delivery_peak_rss_bytes",
                          "Peak resident memory of each of this worker's delivery processes (VmHWM, as of its last"
                          " pass)", ["process"])

# -- every worker process ----------------------------------------------------------------------------------

WORKER_READY = Gauge("payevents_worker_ready", "1 while the worker is ready (partitions assigned or relay "
                     "running, store reachable)", ["worker"])
WORKER_PROGRESS = Gauge("payevents_worker_last_progress_timestamp_seconds",
                        "Unix time the worker's loop last made progress", ["worker", "component"])
WORKER_START = Gauge("payevents_worker_start_time_seconds", "Unix time this worker process started", ["worker"])
WORKER_RESTARTS = Counter("payevents_worker_restarts", "Times `payevents run` restarted this worker slot after "
                          "it died (set from the supervisor's count when the process starts)", ["worker"])
HEAP_FROZEN = Gauge("payevents_worker_heap_frozen_objects", "Objects the garbage collector no longer visits: what "
                    "was alive once this worker had started, frozen then (0: not settled; runtime.heap)")
