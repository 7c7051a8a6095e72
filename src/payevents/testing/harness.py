"""Test your own service against the real runtime: :class:`ServiceHarness`.

    with ServiceHarness(velocity) as h:          # the embedded log in a temporary directory
        h.publish(event_1, event_2)              # records on payments.dev.events, as a producer sends them
        h.run_until_idle()                       # the consumer runtime applies them (batches, seen marks, DLQ)
        rows = h.query("SELECT ... FROM my_table")
        assert h.dead_letters() == []

``broker="kafka://host:port"`` runs the same against Kafka (its channel should be fresh for the test).
Nothing is faked: decoding, validation, the channel's rules, duplicates, dead letters, retries and offsets
are the runtime's own.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from payevents.consuming import Service, as_definition
from payevents.contracts import channel
from payevents.contracts.channel import partition_key
from payevents.contracts.codec import encode_event
from payevents.contracts.events import PaymentEvent
from payevents.runtime.consumer import ConsumerRuntime, ConsumerStats
from payevents.runtime.deadletter import DeadLetter, list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store.db import dispose_engines
from payevents.transport.base import Producer, Record, Transport


class ServiceHarness:
    """Runs one service's consumer in this process against a channel of its own."""

    def __init__(self, service: Service | ServiceDef, *, env: str = "dev", broker: str = "embedded",
                 kafka_config: Mapping[str, str] | None = None, database_url: str | None = None,
                 db_schema_prefix: str | None = None, data_dir: Path | None = None, max_batch: int = 500,
                 consume: bool = True) -> None:
        self.service = as_definition(service, repr(service))
        self._tmp: Path | None = None
        if data_dir is None:
            self._tmp = data_dir = Path(tempfile.mkdtemp(prefix=f"payevents-{self.service.name}-"))
        extra: dict[str, Any] = {"db_schema_prefix": db_schema_prefix} if db_schema_prefix else {}
        self.settings = Settings(env=env, broker=broker, data_dir=data_dir,  # type: ignore[arg-type]
                                 kafka_config=dict(kafka_config or {}), **extra).replace(database_url=database_url)
        self.settings.validate()
        self.max_batch = max_batch
        #: False: only publish (e.g. to a worker started by ``payevents run`` on the same data dir)
        self.consume = consume
        self.topic = channel.topic_for(self.settings.env)
        self.transport: Transport | None = None
        self.runtime: ConsumerRuntime | None = None
        self._producer: Producer | None = None
        self.published = 0

    def __enter__(self) -> ServiceHarness:
        from payevents.transport import open_transport  # type: ignore[attr-defined]

        self.transport = open_transport(self.settings)
        self.transport.create_topics([self.topic, channel.dead_letter_topic_for(self.settings.env)],
                                     self.settings.partitions)
        if self.consume:
            self.runtime = ConsumerRuntime(self.settings, self.service, transport=self.transport,
                                           max_batch=self.max_batch, poll_timeout=0.05)
        self._producer = self.transport.producer()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        dispose_engines()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def stats(self) -> ConsumerStats:
        return self._rt.stats

    @property
    def engine(self) -> sa.Engine:
        """The service's store (where its handlers wrote)."""
        return self._rt.engine

    @property
    def _rt(self) -> ConsumerRuntime:
        if self.runtime is None:
            raise RuntimeError("ServiceHarness: use it as a context manager (with ServiceHarness(...) as h), "
                               "with consume=True")
        return self.runtime

    def publish(self, *events: PaymentEvent, source: str = "tests", headers: Mapping[str, str] | None = None) -> None:
        """Put ``events`` on the channel the way payevents' relay does (key = paymentId, audit headers)."""
        records = []
        for ev in events:
            audit = channel.audit_headers(correlation_id=ev.data.paymentId, causation_id=ev.eventId, source=source,
                                          producer="payevents-testing", environment=self.settings.env,
                                          idempotency_key=f"{ev.eventId}")
            hdrs = {**audit, channel.H_EVENT_TYPE: ev.eventType, channel.H_VERSION: ev.version,
                    channel.H_EVENT_ID: ev.eventId, channel.H_CONTENT_TYPE: channel.CONTENT_TYPE_JSON,
                    **(headers or {})}
            records.append(Record(topic=self.topic, value=encode_event(ev), key=partition_key(ev.data.paymentId),
                                  headers=tuple((k, v.encode()) for k, v in hdrs.items())))
        self.publish_raw(records)

    def publish_raw(self, records: Sequence[Record]) -> None:
        """Put records on the channel as they are (another producer's bytes, poison, a legacy envelope)."""
        assert self._producer is not None
        if records:
            self._producer.send(list(records))
            self.published += len(records)

    def run_until_idle(self, timeout: float = 30.0) -> ConsumerStats:
        """Step the runtime until the service's group has committed past the end of every partition of the
        channel (whoever produced the records: this harness, a relay, another producer). A record that keeps
        failing is retried with backoff and, past its attempts, dead-lettered."""
        rt = self._rt
        assert self.transport is not None
        deadline = time.monotonic() + timeout
        while True:
            result = rt.step()
            if result.consumed == 0 and not (result.waiting or result.retried) and self._drained():
                return rt.stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.service.name}: the channel was not drained within {timeout:.0f}s "
                                   f"(consumed {rt.stats.consumed}, published here {self.published})")

    def _drained(self) -> bool:
        assert self.transport is not None
        ends = self.transport.describe(self.topic).end_offsets
        committed = self.transport.group_offsets(self.service.group, self.topic)
        return all(committed.get(p, 0) >= end for p, end in ends.items())

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the service's store."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def dead_letters(self) -> list[DeadLetter]:
        """What this service sent to the dead-letter channel, with the reasons."""
        return list_dead_letters(self.settings, limit=0, service=self.service.name, transport=self.transport)
