"""The transport interface: moving bytes with keys, headers, partitions, offsets and groups.

Two implementations: :mod:`.embedded` (a durable partitioned log in SQLite, the default) and
:mod:`.kafka` (confluent-kafka). Both place a key on the same partition number (murmur2, as the Java
client and kafka-python do). Offsets follow Kafka's convention: a committed offset is the *next*
offset to read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

from payevents.errors import PayeventsError

#: Kafka's own default of the producer's ``message.max.bytes`` (the embedded log refuses the same sizes)
DEFAULT_MAX_RECORD_BYTES: Final = 1_000_000
#: Kafka's rule for topic names (``org.apache.kafka.common.internals.Topic``): 1..249 of these, not . or ..
_LEGAL_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A record to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    #: None: partition by key (murmur2), like the Java client
    partition: int | None = None


def topic_name_problem(topic: str) -> str | None:
    """Why Kafka would refuse ``topic`` as a name (None if it is legal)."""
    if topic in (".", "..") or not _LEGAL_TOPIC.fullmatch(topic):
        return (f"invalid topic name {topic[:60]!r}: Kafka allows 1 to 249 of [A-Za-z0-9._-] "
                "(and neither '.' nor '..')")
    return None


def record_size(record: Record) -> int:
    """The bytes of a record counted against ``message.max.bytes`` (value, key, headers)."""
    return (len(record.value) + len(record.key or b"")
            + sum(len(k.encode()) + len(v) for k, v in record.headers))


class RecordsRefused(PayeventsError):
    """The broker (or the producer, by the broker's rules) refused some records *for good*: too large, an
    invalid topic name. Retrying cannot help. ``refused``: index in the batch -> reason; ``deliveries``: per
    index, the Delivery of a record that was acknowledged anyway (None for the others, refused or not sent)."""

    def __init__(self, refused: Mapping[int, str], deliveries: Sequence[Delivery | None]) -> None:
        first = min(refused)
        super().__init__(f"{len(refused)} record(s) refused for good; record {first}: {refused[first]}")
        self.refused = dict(refused)
        self.deliveries = list(deliveries)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """Where a produced record landed, once the broker acknowledged it."""

    topic: str
    partition: int
    offset: int
    #: time.time() when the acknowledgement reached the producer
    acked_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    #: broker/log append time, milliseconds since the epoch
    timestamp_ms: int

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """Records of a partition a consumer group had not read and the channel no longer holds (Kafka's retention
    deleted them first): offsets ``first`` to ``upto - 1``; reading went on at ``upto``."""

    topic: str
    partition: int
    first: int
    upto: int

    @property
    def records(self) -> int:
        return self.upto - self.first


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    #: next offset per partition (the high watermark)
    end_offsets: Mapping[int, int]
    config: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: first offset still stored per partition (the log start offset; empty: not reported, read from 0)
    start_offsets: Mapping[int, int] = dataclasses.field(default_factory=dict)
    #: bytes the topic's storage takes, when the transport can tell (the embedded log: its whole file)
    storage_bytes: int | None = None

    @property
    def records(self) -> int:
        """Records stored now: end minus start offset, summed over the partitions."""
        return sum(end - self.start_offsets.get(p, 0) for p, end in self.end_offsets.items())


@runtime_checkable
class Producer(Protocol):
    def send(self, records: Sequence[Record]) -> list[Delivery]:
        """Produce records and block until every one is acknowledged (acks=all on Kafka).

        Returns one Delivery per record, in input order. Records of one key keep their order.
        Raises :class:`~payevents.errors.TransientError` when the broker cannot be reached in time;
        then none, some or all records may have been written (at-least-once: the caller resends).
        Raises :class:`RecordsRefused` when records can never be accepted (larger than the producer's
        ``message.max.bytes``, an invalid topic name); it says which, and which others were acknowledged.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    #: called (inside :meth:`poll`) with the partitions a rebalance is about to move to another member, while they
    #: are still this member's: the caller finishes what it has in progress on them and commits its offsets
    #: (:meth:`commit` still takes them), so their new owner starts after it. ``None``: nothing to finish.
    before_revoke: Callable[[Sequence[TopicPartition]], None] | None

    def poll(self, max_records: int = 500, timeout: float = 0.5) -> list[Message]:
        """Up to ``max_records`` messages from the assigned, non-paused partitions, in offset order
        per partition. Waits up to ``timeout`` seconds for the first one."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the next offset to read. Partitions no longer assigned to this member (lost
        in a rebalance) are skipped with a warning: their new owner re-reads from the last committed offset
        (at-least-once). Raises TransientError when the commit could not be made. The embedded log commits
        synchronously; Kafka may send it asynchronously, then retries a failed request itself and commits
        synchronously on revoke, in :meth:`committed` and on :meth:`close` (so a commit is always read back)."""
        ...

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` again from ``offset`` (used to replay after a failed batch). Ignored for a
        partition that is no longer assigned to this member (its new owner reads from the committed offset)."""
        ...

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def skipped(self) -> list[Skipped]:
        """The records this member found gone before its group read them, since the last call (each range once):
        the offset it was to read next had left the channel, and reading went on at the oldest one still there."""
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: end offset minus committed offset (with nothing committed: minus the
        offset reading started from, i.e. the beginning, or the end when not from_beginning)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    name: str

    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True) -> Consumer:
        """A member of consumer group ``group``; partitions are shared among the group's members.
        With no committed offset, reading starts at the beginning (or the end if not from_beginning)."""
        ...

    def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create topics that do not exist (cleanup.policy=delete). An existing topic with another
        partition count is a ConfigError: it would break per-payment order."""
        ...

    def describe(self, topic: str) -> TopicInfo: ...

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Message]:
        """Read without a group (tail, dead-letter listing, audits)."""
        ...

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Committed offsets (next offset to read) of ``group`` per partition of ``topic``, read without
        joining the group; partitions the group never committed are absent (lag reports, the demo)."""
        ...

    def close(self) -> None: ...
