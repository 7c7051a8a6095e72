"""The Kafka transport (confluent-kafka / librdkafka).

Producer: idempotent, ``acks=all``, ``partitioner=murmur2_random`` (the Java client's placement of a
key), an explicit ``message.timeout.ms``; :meth:`KafkaProducer.send` waits for every delivery report.
Consumer: manual offset store; the offsets the caller gives are committed asynchronously, one request in
flight at a time (a failed one is sent again unless a later offset was sent since), and synchronously when
partitions are revoked, before :meth:`KafkaConsumer.committed` and on close; pause/resume/seek, rebalance
tracking. Topics are created with the AdminClient (``cleanup.policy=delete``); a topic with
another partition count is refused. ``kafka_config`` (SASL/TLS, timeouts, ...) is passed to producer,
consumer and admin client unchanged, except that a setting librdkafka only knows for the other client
type is not passed to it (it would be ignored with a warning).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as CkProducer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from payevents.contracts.channel import partitions_problem, topic_config
from payevents.errors import ConfigError, TransientError
from payevents.transport.base import (
    Delivery,
    Message,
    Record,
    RecordsRefused,
    Skipped,
    TopicInfo,
    topic_name_problem,
)
from payevents.transport.base import TopicPartition as TP

log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("payevents.transport.librdkafka")

#: settings we rely on; kafka_config may not change them
PRODUCER_REQUIRED: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "partitioner": "murmur2_random",
}
PRODUCER_DEFAULTS: dict[str, str] = {
    "message.timeout.ms": "10000",
    "linger.ms": "5",
    "batch.num.messages": "10000",
    "batch.size": "1000000",
    "queue.buffering.max.messages": "500000",
    "allow.auto.create.topics": "false",
}
CONSUMER_REQUIRED: dict[str, str] = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
}
#: sensible for real Kafka; FAST_GROUP_CONFIG (tests, a local broker) overrides them through kafka_config
CONSUMER_DEFAULTS: dict[str, str] = {
    "session.timeout.ms": "30000",
    "heartbeat.interval.ms": "3000",
    "max.poll.interval.ms": "300000",
    "fetch.wait.max.ms": "100",
    "partition.assignment.strategy": "cooperative-sticky",
    # librdkafka prefetches up to this much per consumer (default 64 MiB: a worker's RSS grew by ~90 MiB as a
    # backlog grew); 8 MiB is ~16 of the runtime's 500-record batches of ~1 KiB records, and above the largest
    # record (channel.MAX_RECORD_BYTES, 1 MB). PAYEVENTS_KAFKA_CONFIG overrides it.
    "queued.max.messages.kbytes": "8192",
    # and once that queue is full, librdkafka postpones the partition's next fetch by this much (its default, 1 s,
    # left a consumer that had emptied its 8 MiB waiting for records the broker had ready: a service read 17,000–
    # 19,000 events/s from a local broker, 25,000–28,000 with 10 ms, at the same CPU an event); no longer than the
    # default fetch.wait.max.ms above
    "fetch.queue.backoff.ms": "10",
}
#: with the KIP-848 consumer protocol (group.protocol=consumer) the broker assigns partitions and owns the
#: session and heartbeat timing: librdkafka refuses these client-side settings then
_CLASSIC_GROUP_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")
_CONSUMER_ONLY = {
    "group.id", "group.instance.id", "group.protocol", "session.timeout.ms", "heartbeat.interval.ms",
    "max.poll.interval.ms", "fetch.wait.max.ms", "fetch.min.bytes", "fetch.max.bytes", "fetch.error.backoff.ms",
    "max.partition.fetch.bytes", "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store",
    "auto.commit.interval.ms", "partition.assignment.strategy", "queued.min.messages", "queued.max.messages.kbytes",
    "fetch.queue.backoff.ms", "enable.partition.eof", "check.crcs", "isolation.level", "coordinator.query.interval.ms",
}
_PRODUCER_ONLY = {
    "enable.idempotence", "acks", "request.required.acks", "partitioner", "message.timeout.ms", "delivery.timeout.ms",
    "linger.ms", "queue.buffering.max.ms", "batch.num.messages", "batch.size", "queue.buffering.max.messages",
    "queue.buffering.max.kbytes", "compression.type", "compression.codec", "retries", "message.send.max.retries",
    "retry.backoff.ms", "transactional.id", "transaction.timeout.ms", "enable.gapless.guarantee",
    "max.in.flight.requests.per.connection", "max.in.flight", "sticky.partitioning.linger.ms",
}
#: a member's asynchronous offset commits are at least this far apart (``KafkaConsumer.commit_interval_s``): in a
#: 20,000-event drain of the benchmarks (four members), one request per batch of 500 cost the local broker 0.74 /
#: 0.75 s of CPU in the drain, 0.16 / 0.18 of it in its group coordinator, against 0.57 / 0.57 and 0.09 / 0.10 with
#: at most one request each 200 ms (docs/benchmarks.md, "2026-12-04, late"). A member that dies redelivers what it
#: applied in its last interval: the seen marks absorb it.
COMMIT_INTERVAL_S: Final = 0.2
_OFFSET_INVALID = -1001
_REBALANCE_CODES = {
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST, KafkaError._STATE,
}
_RECREATE_CODES = {KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_PRODUCER_ID,
                   KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_EPOCH}
#: a partition's leader not (yet) where the request went: a topic just created, a leader being elected or moved.
#: Kafka calls all of these retriable; librdkafka does not flag every one of them so in an admin call's answer
#: (``UNKNOWN_LEADER_EPOCH`` from ListOffsets right after a topic's creation failed a CI run, 2026-12-03)
_LEADER_MOVING_CODES = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.NOT_COORDINATOR,
                        KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH,
                        KafkaError.OFFSET_NOT_AVAILABLE}
#: refused for good: the same record will never be accepted (too large, invalid topic or record)
_REFUSED_CODES = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                  KafkaError.TOPIC_EXCEPTION, KafkaError.INVALID_RECORD}
_MISSING_TOPIC_CODES = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}


def _bool_equal(a: str, b: str) -> bool:
    return str(a).lower() == str(b).lower()


#: every client's (producer, consumer, admin), under what kafka_config sets. A client connects first to a bootstrap
#: address, learns the brokers from its metadata, and (librdkafka's sparse connections) connects to a learned broker
#: when a request needs it — at most once each ``reconnect.backoff.ms / 2`` (at least 11 ms) after its last
#: connection attempt: with librdkafka's default 100 ms, 50 ms after the bootstrap's. Every worker start paid it
#: twice (its admin client's topic check, then its consumer's group coordinator): against a local broker, the admin
#: client's first metadata 55–57 ms and a new consumer's first record 70–142 ms, with 20 ms 15 ms and 28–62 ms. The
#: reconnection to a broker that went away still backs off, from 20 ms doubling up to ``reconnect.backoff.max.ms``
#: (librdkafka's 10 s; the Java client starts at 50 ms).
CLIENT_DEFAULTS: dict[str, str] = {
    "reconnect.backoff.ms": "20",
}


def _broker_assigns(cfg: Mapping[str, Any]) -> bool:
    """Whether a consumer with these settings joins with the KIP-848 protocol (``group.protocol=consumer``): the
    broker assigns its partitions, incrementally, and owns the session timing."""
    return str(cfg.get("group.protocol", "classic")).lower() == "consumer"


def _client_config(bootstrap: str, user: Mapping[str, str], *, drop: set[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _rdkafka_log, **CLIENT_DEFAULTS}
    cfg.update({k: v for k, v in user.items() if k not in drop})
    return cfg


def _timeout_s(cfg: Mapping[str, Any], key: str, default_ms: int) -> float:
    try:
        return float(cfg.get(key, default_ms)) / 1000
    except (TypeError, ValueError):
        return default_ms / 1000


def _error(err: KafkaError, what: str) -> Exception:
    """Map a librdkafka error: missing topic/too large are configuration problems, the rest transient."""
    code = err.code()
    if code in _MISSING_TOPIC_CODES:
        return ConfigError(f"{what}: {err.str()} (create the topic first: payevents topics create)")
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return ConfigError(f"{what}: {err.str()} (record larger than the broker accepts)")
    return TransientError(f"{what}: {err.str()} ({err.name()})")


class KafkaTransport:
    """confluent-kafka against ``bootstrap`` (``host:port[,host:port...]``)."""

    name = "kafka"

    def __init__(self, bootstrap: str, kafka_config: Mapping[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.kafka_config = dict(kafka_config or {})
        self._admin_client: AdminClient | None = None
        self._reader: CkConsumer | None = None

    # -- clients ---------------------------------------------------------------------------------
    @property
    def _admin(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = AdminClient(self.admin_config())
        return self._admin_client

    def admin_config(self) -> dict[str, Any]:
        """The admin client's settings (topics, offsets, configs): kafka_config without the consumer's own."""
        return _client_config(self.bootstrap, self.kafka_config, drop=_CONSUMER_ONLY)

    def producer_config(self) -> dict[str, Any]:
        for key, value in PRODUCER_REQUIRED.items():
            if key in self.kafka_config and not _bool_equal(self.kafka_config[key], value):
                raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: {key}={self.kafka_config[key]!r} is not allowed; "
                                  f"payevents needs {key}={value} (ordering and no duplicates per partition)")
        cfg = {**PRODUCER_DEFAULTS, **_client_config(self.bootstrap, self.kafka_config, drop=_CONSUMER_ONLY)}
        cfg.update(PRODUCER_REQUIRED)
        return cfg

    def consumer_config(self, group: str | None, *, from_beginning: bool = True) -> dict[str, Any]:
        for key, value in CONSUMER_REQUIRED.items():
            if key in self.kafka_config and not _bool_equal(self.kafka_config[key], value):
                raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: {key}={self.kafka_config[key]!r} is not allowed; "
                                  f"payevents commits offsets itself after the effects ({key}={value})")
        wait = str(self.kafka_config.get("fetch.wait.max.ms", "100")).strip()
        if wait in ("0", "1"):
            raise ConfigError(f"PAYEVENTS_KAFKA_CONFIG: fetch.wait.max.ms={wait} is not allowed (messages go missing "
                              "with it on the test broker); use 10 or more")
        cfg: dict[str, Any] = {**CONSUMER_DEFAULTS, "auto.offset.reset": "earliest" if from_beginning else "latest"}
        cfg.update(_client_config(self.bootstrap, self.kafka_config, drop=_PRODUCER_ONLY))
        cfg.update(CONSUMER_REQUIRED)
        if _broker_assigns(cfg):
            for key in _CLASSIC_GROUP_ONLY:
                cfg.pop(key, None)
        if group is not None:
            cfg["group.id"] = group
        else:
            cfg.pop("group.id", None)
        return cfg

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self.producer_config(), self)

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True) -> KafkaConsumer:
        if not group:
            raise ConfigError("group: a consumer group id must not be empty")
        if not topics:
            raise ConfigError("topics: a consumer needs at least one topic")
        return KafkaConsumer(self.consumer_config(group, from_beginning=from_beginning), list(topics))

    # -- administration --------------------------------------------------------------------------
    def partition_counts(self, topics: Sequence[str] | None = None, timeout: float = 10.0, *,
                         with_leader: bool = False) -> dict[str, int]:
        """Partition count of each existing topic (of ``topics``, or all); with ``with_leader`` only topics
        whose every partition has a leader."""
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise _error(exc.args[0], f"list topics at {self.bootstrap}") from exc
        wanted = None if topics is None else set(topics)
        return {name: len(t.partitions) for name, t in md.topics.items()
                if t.error is None and (wanted is None or name in wanted) and not name.startswith("__")
                and (not with_leader or (t.partitions and all(p.leader >= 0 for p in t.partitions.values())))}

    def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        if (problem := partitions_problem(partitions)) is not None:
            raise ConfigError(f"partitions: {problem}")
        for topic in topics:
            if not topic:
                raise ConfigError("topic: a topic name must not be empty")
        existing = self.partition_counts(topics)
        self._check_counts(existing, partitions)
        self._check_cleanup(existing)
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            futures = self._admin.create_topics(
                [NewTopic(t, num_partitions=partitions, replication_factor=-1, config=topic_config(t))
                 for t in missing], operation_timeout=10, request_timeout=15)
            for topic, fut in futures.items():
                try:
                    fut.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise _error(exc.args[0], f"create topic {topic!r}") from exc
        # wait until the metadata shows every topic with a leader for each partition (creation and leader
        # election propagate asynchronously; a read before that answers NOT_LEADER_FOR_PARTITION)
        deadline = time.monotonic() + 15
        while True:
            counts = self.partition_counts(topics, with_leader=True)
            self._check_counts(counts, partitions)
            if len(counts) == len(set(topics)):
                return
            if time.monotonic() > deadline:
                raise TransientError(f"topics {sorted(set(topics) - counts.keys())} not visible after creation")
            time.sleep(0.05)

    def _check_cleanup(self, topics: Iterable[str]) -> None:
        """An existing topic must delete by age, not compact: compaction keeps the last record per key, and a
        record's key is its paymentId, so a payment's earlier events would go before a lagging service read them."""
        names = list(topics)
        if not names:
            return
        try:
            found = self._admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in names],
                                                 request_timeout=10)
            for resource, fut in found.items():
                policy = fut.result().get("cleanup.policy")
                if policy is not None and "compact" in str(policy.value):
                    raise ConfigError(
                        f"topic {resource.name!r} has cleanup.policy={policy.value}: compaction keeps only the last"
                        " record per paymentId and deletes a payment's earlier events; the channel needs"
                        " cleanup.policy=delete")
        except KafkaException as exc:  # a broker that cannot describe configs: the check is a guard, not a gate
            log.warning("could not read the cleanup.policy of %s: %s", names, exc.args[0].str())

    @staticmethod
    def _check_counts(counts: Mapping[str, int], partitions: int) -> None:
        for topic, n in counts.items():
            if n != partitions:
                raise ConfigError(f"topic {topic!r} exists with {n} partitions, but {partitions} are configured; "
                                  "a different partition count would break per-payment order")

    def describe(self, topic: str) -> TopicInfo:
        counts = self.partition_counts([topic])
        if topic not in counts:
            raise ConfigError(f"topic {topic!r} does not exist at {self.bootstrap} (create it first)")
        n = counts[topic]
        ends = self._end_offsets(topic, n)
        config: dict[str, str] = {}
        try:
            res = self._admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)], request_timeout=10)
            for fut in res.values():
                config = {k: str(v.value) for k, v in fut.result().items() if v.value is not None}
        except KafkaException as exc:  # optional information; some brokers do not support it
            log.debug("describe_configs %s: %s", topic, exc)
        return TopicInfo(topic, n, dict(sorted(ends.items())), config)

    def _reader_consumer(self) -> CkConsumer:
        if self._reader is None:
            # confluent-kafka requires a group.id; the reader only assign()s and never commits or joins
            cfg = self.consumer_config(f"payevents-reader-{uuid.uuid4().hex}")
            cfg["enable.partition.eof"] = True
            self._reader = CkConsumer(cfg)
        return self._reader

    def _end_offsets(self, topic: str, partitions: int) -> dict[int, int]:
        """The high watermark of each partition (ListOffsets, latest). A retriable error (a leader being
        elected, e.g. just after creation or while a broker fails over) is retried for up to 15 s."""
        deadline = time.monotonic() + 15
        while True:
            try:
                futs = self._admin.list_offsets(
                    {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}, request_timeout=10)
                return {tp.partition: max(f.result().offset, 0) for tp, f in futs.items()}
            except KafkaException as exc:
                err = exc.args[0]
                retry = isinstance(err, KafkaError) and (err.retriable() or err.code() in _LEADER_MOVING_CODES)
                if not retry or time.monotonic() > deadline:
                    raise _error(err, f"end offsets of {topic!r}") from exc
                time.sleep(0.1)

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Message]:
        counts = self.partition_counts([topic])
        if topic not in counts:
            raise ConfigError(f"topic {topic!r} does not exist at {self.bootstrap}")
        if not 0 <= partition < counts[topic]:
            raise ConfigError(f"partition: {partition} is not a partition of {topic!r} (0..{counts[topic] - 1})")
        reader = self._reader_consumer()
        tp = TopicPartition(topic, partition, max(offset, 0))
        reader.assign([tp])
        out: list[Message] = []
        deadline = time.monotonic() + 10
        try:
            while len(out) < max_records and time.monotonic() < deadline:
                batch = reader.consume(num_messages=max_records - len(out), timeout=0.5)
                eof = False
                for m in batch:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof = True
                            continue
                        raise _error(err, f"read {topic}[{partition}]")
                    out.append(_message(m))
                if eof:
                    break
        finally:
            reader.unassign()
        return out[:max_records]

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        counts = self.partition_counts([topic])
        if topic not in counts:
            raise ConfigError(f"topic {topic!r} does not exist at {self.bootstrap}")
        # a consumer that assigns nothing and subscribes to nothing never joins the group
        client = CkConsumer(self.consumer_config(group))
        try:
            tps = client.committed([TopicPartition(topic, p) for p in range(counts[topic])], timeout=10)
        except KafkaException as exc:
            raise TransientError(f"committed offsets of group {group!r}: {exc}") from exc
        finally:
            client.close()
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._admin_client = None


def _headers(m: Any) -> tuple[tuple[str, bytes], ...]:
    """A record's headers as the transport's tuple (a header without a value: b"")."""
    headers = m.headers()
    if not headers:
        return ()
    for _k, v in headers:
        if v is None:
            return tuple((k, b"" if v is None else v) for k, v in headers)
    return tuple(headers)


def _message(m: Any) -> Message:
    return Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), _headers(m), m.timestamp()[1])


class KafkaProducer:
    """Idempotent producer; :meth:`send` blocks until every record is acknowledged."""

    def __init__(self, config: dict[str, Any], transport: KafkaTransport) -> None:
        self._config = config
        self._transport = transport
        self._p = CkProducer(config)
        self._timeout = _timeout_s(config, "message.timeout.ms", 300000)
        self._topics: dict[str, int] = {}

    def _recreate(self, why: str) -> None:
        """Drop the librdkafka producer for a fresh one (a new producer id and sequence state) after ``why``."""
        log.warning("kafka producer: %s: recreating the producer", why)
        self._p.flush(0)
        self._p = CkProducer(self._config)

    def _partitions(self, topic: str) -> int:
        n = self._topics.get(topic)
        if n is None:
            try:
                md = self._p.list_topics(topic, timeout=min(10.0, self._timeout))
            except KafkaException as exc:
                raise _error(exc.args[0], f"metadata of {topic!r}") from exc
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                raise ConfigError(f"topic {topic!r} does not exist; create it first (payevents topics create)")
            n = self._topics[topic] = len(t.partitions)
        return n

    def send(self, records: Sequence[Record]) -> list[Delivery]:
        if not records:
            return []
        refused: dict[int, str] = {}
        problems: dict[str, str | None] = {}  # per topic of the batch (a relay batch has one)
        for i, r in enumerate(records):
            if r.topic not in problems:
                problems[r.topic] = topic_name_problem(r.topic)
            if (problem := problems[r.topic]) is not None:
                refused[i] = problem  # the broker refuses such a name for good (INVALID_TOPIC_EXCEPTION)
                continue
            n = self._partitions(r.topic)  # cached per topic; ConfigError for a topic that does not exist
            if r.partition is not None and not 0 <= r.partition < n:
                raise ConfigError(f"partition: {r.partition} is not a partition of {r.topic!r} (0..{n - 1})")
        results: list[Delivery | None] = [None] * len(records)
        errors: list[tuple[int, KafkaError]] = []
        offsetless: list[tuple[int, int]] = []  # (index, partition): "delivered" with no offset
        pending = len(records) - len(refused)

        def report(i: int, err: KafkaError | None, msg: Any) -> None:
            nonlocal pending
            pending -= 1
            if err is not None:
                errors.append((i, err))
            elif (offset := msg.offset()) is None or offset < 0:
                offsetless.append((i, msg.partition()))
            else:
                results[i] = Delivery(msg.topic(), msg.partition(), offset, time.time())

        produce = self._p.produce
        deadline = time.monotonic() + self._timeout + 10
        for i, r in enumerate(records):
            if i in refused:
                continue
            kwargs: dict[str, Any] = {"key": r.key, "on_delivery": lambda err, msg, i=i: report(i, err, msg)}
            if r.headers:
                kwargs["headers"] = list(r.headers)
            if r.partition is not None:
                kwargs["partition"] = r.partition
            while True:
                try:
                    produce(r.topic, r.value, **kwargs)
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self._p.poll(0.05)
                    if time.monotonic() > deadline:
                        raise TransientError("kafka producer queue stayed full") from None
                except KafkaException as exc:
                    if exc.args[0].code() in _REFUSED_CODES:  # e.g. larger than message.max.bytes: never sent
                        refused[i] = f"{exc.args[0].str()} ({exc.args[0].name()})"
                        pending -= 1
                        break
                    self._p.flush(self._timeout)
                    raise _error(exc.args[0], f"produce to {r.topic!r}") from exc
        while pending > 0:
            self._p.flush(min(1.0, max(deadline - time.monotonic(), 0.01)))
            if pending > 0 and time.monotonic() > deadline:
                raise TransientError(f"kafka: {pending} of {len(records)} records not acknowledged in time")
        if offsetless:
            # librdkafka's "delivered" without an offset is the broker answering DUPLICATE_SEQUENCE_NUMBER (it
            # says it holds the batch already). A partition just made anew said so of a batch it did not hold,
            # having taken the producer's next batch first: the record was on no partition. Not a delivery: the
            # caller sends again (a copy at most, which consumers drop by eventId; never a loss), and the next
            # send starts with a fresh producer id, not the sequence state the broker and we disagree on.
            i, partition = min(offsetless)
            self._recreate(f"record {i} of {len(records)} to {records[i].topic}[{partition}] acknowledged without "
                           "an offset")
            raise TransientError(f"kafka: {len(offsetless)} of {len(records)} records to {records[i].topic!r} "
                                 f"acknowledged without an offset (record {i}, partition {partition}): not known "
                                 "to be stored; send them again")
        for i, err in list(errors):
            if err.code() in _REFUSED_CODES:
                refused[i] = f"{err.str()} ({err.name()})"
                errors.remove((i, err))
        if errors:
            i, err = min(errors, key=lambda e: e[0])
            if err.fatal() or err.code() in _RECREATE_CODES:
                # the idempotent producer cannot continue (or stays stuck, e.g. after a broker restart lost
                # its producer id): the next send starts with a fresh one
                self._recreate(f"error {err.str()}")
            raise _error(err, f"deliver record {i} of {len(records)} to {records[i].topic!r}")
        if refused:
            raise RecordsRefused(refused, results)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._p.flush(self._timeout)


#: most seconds an assignment waits for the new partitions' log starts (:meth:`KafkaConsumer._start_at`)
START_CHECK_S: Final = 5.0
#: most seconds :meth:`KafkaConsumer.close` waits for librdkafka's close
CLOSE_TIMEOUT_S: Final = 30.0


class KafkaConsumer:
    """A group member: subscribe, manual commits, rebalance tracking.

    Offsets are committed asynchronously (the caller has committed its store first, so a commit that never
    lands only means a redelivery, which the seen marks absorb): :meth:`commit` sends at once when no commit
    is in flight and none was sent in the last :attr:`commit_interval_s`, else the offsets wait for the next
    :meth:`commit` or :meth:`poll` after the one in flight is answered and the interval has passed (one request
    at a time, so requests never overtake each other; at most one every interval, so a member that applies a
    batch every few milliseconds does not send the broker an offset commit — a write to its offsets log — for
    each). A failed request is sent again unless a later offset of that partition was sent since. Partitions
    being revoked, :meth:`committed` and :meth:`close` commit synchronously what is not yet known to be
    committed."""
    #: the least time between two asynchronous commit requests (seconds); 0: send each at once
    commit_interval_s: float = COMMIT_INTERVAL_S

    def __init__(self, config: dict[str, Any], topics: list[str]) -> None:
        self.group = str(config["group.id"])
        self._from_beginning = config.get("auto.offset.reset") in ("earliest", "smallest", "beginning")
        #: the assignment is incremental (cooperative-sticky, or the KIP-848 protocol): an assignment callback
        #: that assigns itself calls incremental_assign with the new partitions, else assign with all of them
        self._incremental = (_broker_assigns(config)
                             or "cooperative" in str(config.get("partition.assignment.strategy", "")))
        #: offsets given to commit() and not sent yet (or sent, failed and to be sent again)
        self._to_commit: dict[TP, int] = {}
        #: the latest offset sent per partition (a failed request is sent again only if still the latest)
        self._last_sent: dict[TP, int] = {}
        #: per partition, the latest offset sent that is known to be committed
        self._confirmed: dict[TP, int] = {}
        #: the asynchronous request in flight (its answer is served by poll/consume), None if none
        self._in_flight: dict[TP, int] | None = None
        #: when the last asynchronous request was sent (``time.monotonic()``)
        self._sent_at = -math.inf
        self._c = CkConsumer({**config, "error_cb": self._on_error, "on_commit": self._on_commit})
        self._assigned: set[TP] = set()
        self._paused: set[TP] = set()
        #: assigned since the last poll: resumed in the client then, unless paused by the caller since (librdkafka
        #: keeps a partition's pause across a lost + re-assign, which this transport's record does not)
        self._fresh: set[TP] = set()
        self._deferred: Exception | None = None
        #: per assigned partition, the offset this member reads next (the group's committed offset at assignment,
        #: then the one after each record returned): a record beyond it that the channel's log start has passed
        #: means the records between were deleted before this group read them
        self._next: dict[TP, int] = {}
        self._skipped: list[Skipped] = []
        self._closed = False
        self.before_revoke: Callable[[Sequence[TP]], None] | None = None
        self._c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _on_error(self, err: KafkaError) -> None:
        """Client-level errors (served during poll). librdkafka reconnects by itself; the ones that stop
        consumption are raised from the next poll so the caller backs off."""
        if err.fatal() or err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION):
            if self._deferred is None:
                self._deferred = (ConfigError if err.code() == KafkaError._AUTHENTICATION else TransientError)(
                    f"kafka consumer ({self.group}): {err.str()} ({err.name()})")
        else:
            log.debug("kafka consumer %s: %s", self.group, err.str())

    def _on_assign(self, _c: Any, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self._fresh |= {(tp.topic, tp.partition) for tp in partitions}
        if partitions:
            try:
                committed = self._c.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions],
                                              timeout=10)
            except KafkaException as exc:  # not known: a gap on these partitions is seen from their first record on
                log.warning("group %s: committed offsets of %s not read at assignment (%s)", self.group,
                            sorted((tp.topic, tp.partition) for tp in partitions), exc.args[0].str())
            else:
                self._start_at({(tp.topic, tp.partition): tp.offset for tp in committed})
                self._assign_at(partitions)
        log.debug("group %s assigned %s", self.group, sorted(self._assigned))

    def _assign_at(self, partitions: list[TopicPartition]) -> None:
        """Hand librdkafka the assignment with the start of each partition :meth:`_start_at` found (the group's
        committed offset, or the log start a group with nothing committed there reads from). Left to itself,
        librdkafka asks the group's committed offsets again, and for a partition with none waits ~100 ms on a
        timer before it asks the broker for the log start (seen in its debug log): a new group's first records
        came that much later. A partition whose start is not known keeps the offset librdkafka was given (it
        looks it up as before); if the call fails, the client assigns the partitions itself after the callback."""
        starts = [TopicPartition(tp.topic, tp.partition, self._next.get((tp.topic, tp.partition), tp.offset))
                  for tp in partitions]
        try:
            (self._c.incremental_assign if self._incremental else self._c.assign)(starts)
        except KafkaException as exc:
            log.warning("group %s: assignment at the known offsets failed (%s); the client assigns %s itself",
                        self.group, exc.args[0].str(), sorted((tp.topic, tp.partition) for tp in partitions))

    def _start_at(self, committed: dict[TP, int]) -> None:
        """Where this member reads each newly assigned partition from, checked against the partition's log start:

        - committed below the log start: retention deleted records before this group read them — reported at
          once (:meth:`skipped`), not only when a later record arrives there (maybe never). The group's offset is
          left where it is: a member that dies before its service recorded the loss leaves it to be seen again by
          the next one; it moves past the gap with the first record the group applies there;
        - nothing committed yet (reading from the log start): that start is committed as the group's offset with
          the next commit. Without it, a group that had read nothing there yet and was down while retention
          deleted records from it would start again from the new log start with nothing to compare against.

        A log start that cannot be read leaves the check to the first record read (:meth:`_check_gap`); the
        assignment waits on the broker for at most :data:`START_CHECK_S` in all (it runs inside a rebalance), and
        after a failure asks no more (the broker is not answering)."""
        deadline = time.monotonic() + START_CHECK_S
        answering = True
        for tp, offset in committed.items():
            if offset < 0 and not self._from_beginning:
                continue
            low = -1
            if answering:
                try:
                    low = self._c.get_watermark_offsets(TopicPartition(*tp), cached=False,
                                                        timeout=max(deadline - time.monotonic(), 0.05))[0]
                except KafkaException as exc:
                    answering = False
                    log.warning("group %s: log start of %s not read at assignment (%s); a gap there is seen from "
                                "the first record read", self.group, tp, exc.args[0].str())
            if offset < 0:
                if low >= 0:
                    self._next[tp] = low
                    self._to_commit.setdefault(tp, low)
                continue
            if low > offset:  # said at every start until the group's offset passes it (a record read after it)
                self._skipped.append(Skipped(tp[0], tp[1], offset, low))
                offset = low
            self._next[tp] = offset

    def _on_revoke(self, _c: Any, partitions: list[TopicPartition]) -> None:
        """Before the partitions move: the caller finishes its work on them (:attr:`before_revoke`; what it raises
        comes out of the poll, after the rest), then what was given for them and is not known to be committed is
        committed synchronously (their new owner starts from there), and they are forgotten."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        try:
            if gone and self.before_revoke is not None:
                self.before_revoke(sorted(gone & self._assigned))
        finally:
            todo = {tp: o for tp, o in self._unconfirmed().items() if tp in gone}
            if todo:
                try:
                    self._commit_now(todo)
                except KafkaException as exc:
                    log.warning("group %s: commit of revoked %s failed (%s): their new owner re-reads from the "
                                "last committed offset", self.group, sorted(todo), exc.args[0].str())
            self._forget(gone)
            log.debug("group %s revoked %s", self.group, sorted(gone))

    def _on_lost(self, _c: Any, partitions: list[TopicPartition]) -> None:
        """Lost (the member was out of the group): no commit is possible any more; the new owner re-reads."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._forget(gone)
        log.debug("group %s lost %s", self.group, sorted(gone))

    def _forget(self, gone: set[TP]) -> None:
        self._assigned -= gone
        self._paused -= gone
        for tp in gone:
            self._next.pop(tp, None)
            self._to_commit.pop(tp, None)
            self._last_sent.pop(tp, None)
            self._confirmed.pop(tp, None)

    def _unconfirmed(self) -> dict[TP, int]:
        """Per assigned partition, the offset given to commit() that is not known to be committed."""
        todo = {tp: o for tp, o in self._last_sent.items() if self._confirmed.get(tp) != o}
        todo.update(self._to_commit)
        return {tp: o for tp, o in todo.items() if tp in self._assigned}

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition] | None) -> None:
        """The answer to an asynchronous commit (served by poll/consume): a failed partition whose offset is
        still the latest sent is committed again with the next request."""
        sent, self._in_flight = self._in_flight, None
        if sent is None:
            return
        got = {(tp.topic, tp.partition): tp for tp in partitions or ()}
        failed = {tp: off for tp, off in sent.items()
                  if err is not None or tp not in got or got[tp].error is not None}
        for tp, off in sent.items():
            if tp not in failed and self._last_sent.get(tp) == off:
                self._confirmed[tp] = off
        if not failed:
            return
        again = {tp: off for tp, off in failed.items()
                 if tp in self._assigned and tp not in self._to_commit and self._last_sent.get(tp) == off
                 and self._confirmed.get(tp) != off}
        self._to_commit.update(again)
        first = err if err is not None else next((got[tp].error for tp in failed if tp in got), None)
        log.warning("group %s: offset commit of %s failed (%s); %s", self.group, sorted(failed),
                    first.str() if isinstance(first, KafkaError) else first,
                    f"sent again: {sorted(again)}" if again else "covered by a later commit or no longer assigned")

    def poll(self, max_records: int = 500, timeout: float = 0.5) -> list[Message]:
        self._check_open()
        self._raise_deferred()
        if self._fresh:
            stale = sorted((self._fresh & self._assigned) - self._paused)
            try:
                if stale:
                    self._c.resume([TopicPartition(t, p) for t, p in stale])
                self._fresh = set()
            except KafkaException as exc:  # not yet resumable: the next poll tries again
                log.debug("kafka consumer %s: resume of %s deferred: %s", self.group, stale, exc)
        try:
            # what is queued now; else wait (up to timeout) for the first record and take what came with it.
            # consume(n, timeout) alone waits until n records are queued: a member that had caught up held
            # every partial batch for the whole timeout
            batch: list[Any] = self._c.consume(num_messages=max_records, timeout=0)
            if not batch and timeout > 0:
                batch = self._c.consume(num_messages=1, timeout=timeout)
                if batch and max_records > 1:
                    batch += self._c.consume(num_messages=max_records - 1, timeout=0)
        except KafkaException as exc:
            raise _error(exc.args[0], f"consume ({self.group})") from exc
        # the answer to the commit in flight was served by consume: send what waited for it
        self._send_commits(raising=False)
        if not batch:
            self._raise_deferred()
        out: list[Message] = []
        append = out.append
        rewind: dict[TP, int] = {}
        assigned, paused, expected = self._assigned, self._paused, self._next
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if self._deferred is None:
                    self._deferred = _error(err, f"consume ({self.group})")
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            tp: TP = (topic, partition)
            if tp in paused or tp not in assigned:
                # fetched before a pause: put it back so it is read after resume
                rewind.setdefault(tp, offset)
                continue
            if offset != expected.get(tp, offset):
                self._check_gap(tp, expected[tp], offset)
            expected[tp] = offset + 1
            append(Message(topic, partition, offset, m.key(), m.value(), _headers(m), m.timestamp()[1]))
        for back, first in rewind.items():
            if back in self._assigned:
                self.seek(back, first)
        if not out:
            self._raise_deferred()
        return out

    def _check_gap(self, tp: TP, expected: int, offset: int) -> None:
        """A record at ``offset`` where ``expected`` was next: when the partition's log start has passed
        ``expected``, the records from it up to ``offset`` were deleted unread (librdkafka resets a position the
        broker no longer holds to the log start, and says so only in its own log). A gap above the log start
        (a transaction marker's offset) is no loss."""
        if offset < expected:  # a position moved back (a rewind): nothing skipped
            return
        part = TopicPartition(*tp)
        low = (self._c.get_watermark_offsets(part, cached=True) or (-1, -1))[0]
        if low < 0:
            try:
                low = self._c.get_watermark_offsets(part, timeout=5, cached=False)[0]
            except KafkaException as exc:
                log.warning("group %s: %s read at %d where %d was next; its log start not known (%s)", self.group,
                            tp, offset, expected, exc.args[0].str())
                return
        if low > expected:
            self._skipped.append(Skipped(tp[0], tp[1], expected, offset))

    def skipped(self) -> list[Skipped]:
        out, self._skipped = self._skipped, []
        return out

    def _raise_deferred(self) -> None:
        """Raise a broker error seen in an earlier batch (after that batch's good records were returned)."""
        pending, self._deferred = self._deferred, None
        if pending is not None:
            raise pending

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit offsets of assigned partitions (others are skipped with a warning: their new owner re-reads
        from the last committed offset), asynchronously: see the class. Raises TransientError only when the
        request cannot even be queued; the offsets are then sent again with the next commit or poll."""
        self._check_open()
        mine = {tp: o for tp, o in offsets.items() if tp in self._assigned}
        lost = sorted(set(offsets) - mine.keys())
        if lost:
            log.warning("group %s: not committing %s: no longer assigned to this member", self.group, lost)
        self._to_commit.update(mine)
        self._send_commits(raising=True)

    def _send_commits(self, *, raising: bool) -> None:
        """Send the waiting offsets as one asynchronous request, unless one is in flight or was sent less than
        :attr:`commit_interval_s` ago."""
        if self._in_flight is not None or not self._to_commit:
            return
        now = time.monotonic()
        if now - self._sent_at < self.commit_interval_s:
            return
        todo = {tp: o for tp, o in self._to_commit.items() if tp in self._assigned}
        self._to_commit = {}
        if not todo:
            return
        try:
            self._c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in todo.items()], asynchronous=True)
        except KafkaException as exc:
            err = exc.args[0]
            self._to_commit = {**todo, **self._to_commit}
            if err.code() in _REBALANCE_CODES or not raising:
                log.warning("group %s: commit of %s not sent (%s): sent again with the next commit or poll",
                            self.group, sorted(todo), err.name())
                return
            raise _error(err, f"commit ({self.group})") from exc
        self._in_flight = todo
        self._sent_at = now
        self._last_sent.update(todo)

    def _commit_now(self, offsets: Mapping[TP, int]) -> None:
        """Synchronous commit (KafkaException on failure); the offsets count as sent."""
        self._c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        self._last_sent.update(offsets)
        self._confirmed.update(offsets)
        for tp, o in offsets.items():
            if self._to_commit.get(tp) == o:
                del self._to_commit[tp]

    def _flush_commits(self) -> None:
        """Synchronously commit every offset given and not known to be committed (waiting, or in flight)."""
        todo = self._unconfirmed()
        if not todo:
            return
        try:
            self._commit_now(todo)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _REBALANCE_CODES:
                log.warning("group %s: commit of %s refused during a rebalance (%s): the new owner re-reads them",
                            self.group, sorted(todo), err.name())
                return
            raise _error(err, f"commit ({self.group})") from exc

    def committed(self, partitions: Sequence[TP]) -> dict[TP, int | None]:
        """The group's committed offsets, after committing synchronously what this member gave and is not
        known to be committed yet (so a commit is read back)."""
        self._check_open()
        if not partitions:
            return {}
        self._flush_commits()
        return self._broker_committed(partitions)

    def _broker_committed(self, partitions: Sequence[TP]) -> dict[TP, int | None]:
        try:
            res = self._c.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        except KafkaException as exc:
            raise _error(exc.args[0], f"committed offsets ({self.group})") from exc
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in res}

    def seek(self, partition: TP, offset: int) -> None:
        """Read ``partition`` again from ``offset`` (ignored for a partition not assigned here)."""
        self._check_open()
        if partition not in self._assigned:
            return
        tp = TopicPartition(partition[0], partition[1], max(offset, 0))
        self._next[partition] = max(offset, 0)
        deadline = time.monotonic() + 5
        while True:
            try:
                self._c.seek(tp)
                return
            except KafkaException as exc:
                # right after an assignment the fetcher may not be started yet (_STATE): retry briefly
                if exc.args[0].code() != KafkaError._STATE or time.monotonic() > deadline:
                    raise _error(exc.args[0], f"seek {partition} to {offset}") from exc
                time.sleep(0.02)

    def pause(self, partitions: Sequence[TP]) -> None:
        tps = [tp for tp in partitions if tp in self._assigned]
        if tps:
            self._c.pause([TopicPartition(t, p) for t, p in tps])
            self._paused.update(tps)

    def resume(self, partitions: Sequence[TP]) -> None:
        tps = [tp for tp in partitions if tp in self._paused]
        if tps:
            self._c.resume([TopicPartition(t, p) for t, p in tps])
            self._paused.difference_update(tps)

    def assignment(self) -> set[TP]:
        return set(self._assigned)

    def lag(self) -> dict[TP, int]:
        self._check_open()
        if not self._assigned:
            return {}
        tps = sorted(self._assigned)
        # what the group committed, or this member's later offset given to commit() and still on its way
        # (no synchronous commit here: lag is read about once a second while consuming)
        committed = self._broker_committed(tps)
        committed.update(self._unconfirmed())
        positions = {(tp.topic, tp.partition): tp.offset
                     for tp in self._c.position([TopicPartition(t, p) for t, p in tps])}
        out: dict[TP, int] = {}
        for tp in tps:
            # the watermarks of the last fetch response first (no request), else ask the broker
            low, high = self._c.get_watermark_offsets(TopicPartition(*tp), cached=True) or (-1, -1)
            if high < 0:
                try:
                    low, high = self._c.get_watermark_offsets(TopicPartition(*tp), timeout=5, cached=False)
                except KafkaException as exc:
                    raise _error(exc.args[0], f"watermarks of {tp}") from exc
            base = committed.get(tp)
            if base is None:  # nothing committed: count from where reading starts
                pos = positions.get(tp, _OFFSET_INVALID)
                base = low if self._from_beginning or pos < 0 else pos
            out[tp] = max(high - base, 0)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("consumer: used after close()")

    def close(self) -> None:
        """Leave the group (its partitions move to the other members at once)."""
        if not self._closed:
            self._closed = True
            try:
                self._flush_commits()
            except Exception as exc:  # the new owner re-reads from the last committed offset (at-least-once)
                log.warning("group %s: final offset commit failed: %s", self.group, exc)
            self._close_client()
            self._assigned.clear()

    def _close_client(self) -> None:
        """librdkafka's close, which serves the revocation of this member's partitions, bounded: seen once (a CI run
        of 2026-12-02) blocked for good inside it, the rebalance callback waiting on an assignment the closing group
        never answered. A close that takes longer than :data:`CLOSE_TIMEOUT_S` is left to finish on its own thread
        and said; the caller goes on (what was given to commit was committed synchronously before; a member that
        has not left is taken out of the group by its session timeout)."""
        def close() -> None:
            try:
                self._c.close()
            except Exception as exc:
                log.warning("group %s: close failed: %s", self.group, exc)

        closing = threading.Thread(target=close, name=f"kafka-close {self.group}", daemon=True)
        closing.start()
        closing.join(CLOSE_TIMEOUT_S)
        if closing.is_alive():
            log.error("group %s: the Kafka client did not close in %g s; left closing on its own thread (the group "
                      "drops this member after its session timeout)", self.group, CLOSE_TIMEOUT_S)
