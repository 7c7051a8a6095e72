"""The dead-letter channel ``payments.{env}.events.dlq``: write, list, show and replay.

A dead-letter record keeps the original value bytes, key and headers unchanged and adds the
``dlq.*`` headers of :mod:`payevents.contracts.channel` (original topic/partition/offset, service,
reason, failedAt) — except that card numbers are masked but their last four digits (``dlq.redacted``).
A record too large to copy with those headers is cut (``dlq.truncated``: a prefix, its size and hash).
Nothing is dropped: replay re-publishes the original bytes to the channel (never a cut letter), with the
same key (so the same partition) once the cause is fixed; consumers remove the duplicates by eventId.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from payevents.contracts import channel, codec
from payevents.contracts.cardguard import holds_card_number, mask_card_numbers, mask_card_text
from payevents.contracts.channel import dead_letter_topic_for, topic_for
from payevents.errors import ContractError, NotFound
from payevents.settings import Settings
from payevents.transport.base import Delivery, Headers, Message, Producer, Record, Transport

DLQ_HEADERS: tuple[str, ...] = channel.DEAD_LETTER_HEADERS
#: header added to a record re-published by :func:`replay`: "dlqPartition:dlqOffset"
H_REPLAYED_FROM = "dlq.replayedFrom"
#: set when the stored bytes are not the original ones: "card-number" (card digits masked but the last four), or
#: "card-number; value withheld" (no masking could remove them all, e.g. JSON escapes in a broken document)
H_REDACTED = "dlq.redacted"
#: "true" when the record did not fit: the dead letter holds a prefix of the value, its size and its hash
H_TRUNCATED = "dlq.truncated"
#: the original value's size in bytes and SHA-256 (hex), on every cut dead letter
H_SIZE = "dlq.original.size"
H_SHA256 = "dlq.original.sha256"
#: the original key's size and SHA-256 when the key itself was too long to keep (over KEEP_KEY_BYTES)
H_KEY_SIZE = "dlq.original.keySize"
H_KEY_SHA256 = "dlq.original.keySha256"
#: how much of the value a cut dead letter keeps (masked for card data first, then cut)
PREFIX_BYTES = 4096
KEEP_KEY_BYTES = 1024
#: the budget of a dead letter: the channel's record limit less room for the record's framing
DEAD_LETTER_MAX_BYTES = channel.MAX_RECORD_BYTES - 4096
_OWN_HEADERS = (H_REPLAYED_FROM, H_REDACTED, H_TRUNCATED, H_SIZE, H_SHA256, H_KEY_SIZE, H_KEY_SHA256)
#: a cut dead letter keeps the original headers whose value is at most this long (eventType, eventId, ...)
_KEEP_HEADER_BYTES = 256

MAX_REASON = 500


def redact(text: str) -> str:
    """``text`` with every card number the card guard finds (any separators, any digits) masked but its last
    four; cut to 500 characters. Ids that only look like digit runs (UUIDs, dates, ...) stay readable: a
    reason that names the first eventId of a conflict must name it whole."""
    return mask_card_text(text)[:MAX_REASON]


def describe(exc: BaseException) -> str:
    """An exception as a reason: its type and the first line of its text, card numbers masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def record_problem(value: bytes | None, key: bytes | None,
                   headers: Headers) -> tuple[codec.DecodedEvent | None, str | None]:
    """The channel's rules for one record, as every service applies them on read before any effect: (the event,
    None), or (None, why it goes to the dead-letter channel) — no value, a body that does not decode or breaks
    the contract (card numbers never echoed), a key that is not the body's UTF-8 paymentId, an eventType header
    that lies. The consumers judge each record they read with it, and ``dlq replay`` each dead letter before it
    is re-published."""
    if value is None:
        return None, "empty: the record has no value (tombstone)"
    try:
        decoded = codec.decode_event(value)
    except Exception as exc:  # the codec's contract is EventValidationError; anything else is poison too
        error = exc
    else:
        # the key rule, for every service: key = the body's UTF-8 paymentId, checked before any effect
        if (problem := channel.key_problem(key, decoded.payment_id)) is not None:
            return None, f"key: {redact(problem)}"
        if (problem := channel.event_type_header_problem(headers, decoded.event_type,
                                                         legacy=decoded.legacy)) is not None:
            return None, f"header: {redact(problem)}"
        return decoded, None
    # why it was rejected (the UTF-8 check only here: valid events never pay for it)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not-utf8: invalid UTF-8 byte at position {exc.start} ({exc.reason})"
    if isinstance(error, codec.EventValidationError):
        # the codec checks every string for card numbers (cardguard) and never echoes the digits
        card = any(e.rule == "card-number" for e in error.errors)
        return None, f"{'card-number' if card else 'invalid'}: {redact(str(error))}"
    return None, f"undecodable: {describe(error)}"


def _scrub(raw: bytes) -> tuple[bytes | None, bool]:
    """(``raw`` with card numbers masked — or None when masking cannot remove them all —, whether it changed)."""
    masked = mask_card_numbers(raw)
    if holds_card_number(masked):
        return None, True
    return masked, masked != raw


def _size(value: bytes, key: bytes | None, headers: Headers) -> int:
    return len(value) + len(key or b"") + sum(len(k.encode("utf-8", "replace")) + len(v) + 8 for k, v in headers)


def _as_bytes(v: object) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8", "replace")


def dead_letter_record(message: Message, service: str, reason: str, settings: Settings,
                       failed_at: datetime | None = None, *, cut: bool = False) -> Record:
    """The dead-letter record for ``message``: its bytes, key and headers plus the ``dlq.*`` headers.

    Card numbers never rest in a topic: wherever value, key or a kept header holds one, its digits are masked
    but the last four (``dlq.redacted: card-number``). When the copy plus the dead-letter headers would not
    fit in :data:`DEAD_LETTER_MAX_BYTES` (or ``cut``), the letter holds what fits: the first
    :data:`PREFIX_BYTES` of the (masked) value, ``dlq.original.size``, ``dlq.original.sha256`` and
    ``dlq.truncated: true``. Never raises for any message: a letter that cannot be built otherwise is cut."""
    try:
        return _letter(message, service, reason, settings, failed_at, cut=cut)
    except Exception as exc:  # never let building a dead letter end a worker
        note = f"{reason} [dead letter cut: {type(exc).__name__} while copying the record]"
        return _letter(message, service, note, settings, failed_at, cut=True, plain=True)


def _letter(message: Message, service: str, reason: str, settings: Settings, failed_at: datetime | None,
            *, cut: bool, plain: bool = False) -> Record:
    when = (failed_at or datetime.now(UTC)).isoformat()
    original = _as_bytes(message.value or b"")
    key = None if message.key is None else _as_bytes(message.key)
    kept: Headers = ()
    if not plain:
        kept = tuple((str(k), _as_bytes(v)) for k, v in message.headers
                     if k not in DLQ_HEADERS and k not in _OWN_HEADERS)
    scrubbed, masked = _scrub(original)
    withheld = scrubbed is None
    value = b"" if scrubbed is None else scrubbed
    if key is not None:
        key, key_masked = _scrub(key)
        masked = masked or key_masked
    clean: list[tuple[str, bytes]] = []
    for k, v in kept:
        scrubbed_v, v_masked = _scrub(v)
        masked = masked or v_masked
        if scrubbed_v is not None:
            clean.append((k, scrubbed_v))
    kept = tuple(clean)
    extra: Headers = (
        (channel.DLQ_ORIGINAL_TOPIC, str(message.topic).encode("utf-8", "replace")),
        (channel.DLQ_ORIGINAL_PARTITION, str(message.partition).encode()),
        (channel.DLQ_ORIGINAL_OFFSET, str(message.offset).encode()),
        (channel.DLQ_SERVICE, service.encode("utf-8", "replace")),
        (channel.DLQ_REASON, redact(reason).encode("utf-8", "replace")),
        (channel.DLQ_FAILED_AT, when.encode()),
    )
    redacted: Headers = ((H_REDACTED, b"card-number; value withheld" if withheld else b"card-number"),) \
        if masked else ()
    if not cut and _size(value, key, kept + extra + redacted) <= DEAD_LETTER_MAX_BYTES:
        return Record(topic=dead_letter_topic_for(settings.env), value=value, key=key,
                      headers=kept + extra + redacted)
    # cut: a prefix, the size and hash of the original, small original headers only
    info: Headers = ((H_TRUNCATED, b"true"), (H_SIZE, str(len(original)).encode()),
                     (H_SHA256, hashlib.sha256(original).hexdigest().encode()))
    if key is not None and len(key) > KEEP_KEY_BYTES:
        info += ((H_KEY_SIZE, str(len(key)).encode()), (H_KEY_SHA256, hashlib.sha256(key).hexdigest().encode()))
        key = None
    small = tuple((k, v) for k, v in kept if len(k) + len(v) <= _KEEP_HEADER_BYTES)[:32]
    return Record(topic=dead_letter_topic_for(settings.env), value=value[:PREFIX_BYTES], key=key,
                  headers=small + extra + redacted + info)


def dead_letter(producer: Producer, message: Message, service: str, reason: str, settings: Settings) -> Delivery:
    """Produce ``message`` to the dead-letter channel with ``reason``; blocks until acknowledged."""
    return producer.send([dead_letter_record(message, service, reason, settings)])[0]


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter channel, with its ``dlq.*`` headers parsed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    service: str
    reason: str
    failed_at: str
    timestamp_ms: int

    @property
    def truncated(self) -> bool:
        """The record did not fit: this letter holds a prefix of its value (with its size and hash)."""
        return _header(self.headers, H_TRUNCATED) == "true"

    @property
    def event_type(self) -> str | None:
        return _header(self.headers, channel.H_EVENT_TYPE)

    @property
    def event_id(self) -> str | None:
        return _header(self.headers, channel.H_EVENT_ID)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly view (value as text when it is UTF-8, else hex)."""
        try:
            value: str = self.value.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            value, encoding = self.value.hex(), "hex"
        return {
            "partition": self.partition, "offset": self.offset,
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "originalTopic": self.original_topic, "originalPartition": self.original_partition,
            "originalOffset": self.original_offset, "service": self.service, "reason": self.reason,
            "failedAt": self.failed_at, "eventType": self.event_type, "eventId": self.event_id,
            "value": value, "valueEncoding": encoding,
            "headers": {k: v.decode("utf-8", "replace") for k, v in self.headers},
        }


def _header(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse(message: Message) -> DeadLetter:
    """A record of the dead-letter channel, card numbers masked again on read (letters written before the
    masking covered every reason and writing may hold some): nothing read from here echoes a card number."""
    value, _ = _scrub(message.value or b"")
    key = None if message.key is None else _scrub(message.key)[0]
    h = tuple((k, v) for k, v in ((k, _scrub(v)[0]) for k, v in message.headers) if v is not None)
    return DeadLetter(
        partition=message.partition, offset=message.offset, key=key, value=value or b"",
        headers=h, original_topic=_header(h, channel.DLQ_ORIGINAL_TOPIC) or "",
        original_partition=_int(_header(h, channel.DLQ_ORIGINAL_PARTITION)),
        original_offset=_int(_header(h, channel.DLQ_ORIGINAL_OFFSET)),
        service=_header(h, channel.DLQ_SERVICE) or "", reason=_header(h, channel.DLQ_REASON) or "",
        failed_at=_header(h, channel.DLQ_FAILED_AT) or "", timestamp_ms=message.timestamp_ms,
    )


@contextmanager
def _transport(settings: Settings, transport: Transport | None) -> Iterator[Transport]:
    if transport is not None:
        yield transport
        return
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    own: Transport = open_transport(settings)
    try:
        yield own
    finally:
        own.close()


def _read_all(transport: Transport, topic: str, partition: int, start: int, end: int) -> list[Message]:
    out: list[Message] = []
    offset = start
    while offset < end:
        chunk = transport.read(topic, partition, offset, max_records=min(500, end - offset))
        if not chunk:
            break
        out.extend(m for m in chunk if m.offset < end)
        offset = chunk[-1].offset + 1
    return out


def list_dead_letters(settings: Settings, limit: int = 100, *, service: str | None = None,
                      transport: Transport | None = None) -> list[DeadLetter]:
    """The newest ``limit`` dead letters (all partitions), oldest first, optionally of one service."""
    topic = dead_letter_topic_for(settings.env)
    with _transport(settings, transport) as t:
        t.create_topics([topic], settings.partitions)
        info = t.describe(topic)
        found: list[DeadLetter] = []
        for partition, end in sorted(info.end_offsets.items()):
            start = 0 if service else max(0, end - limit)
            found.extend(parse(m) for m in _read_all(t, topic, partition, start, end))
    if service:
        found = [d for d in found if d.service == service]
    found.sort(key=lambda d: (d.failed_at, d.partition, d.offset))
    return found[-limit:] if limit else found


def show(settings: Settings, partition: int, offset: int, *, transport: Transport | None = None) -> DeadLetter:
    """One dead letter by its position in the dead-letter channel; NotFound if there is none."""
    topic = dead_letter_topic_for(settings.env)
    with _transport(settings, transport) as t:
        t.create_topics([topic], settings.partitions)
        msgs = t.read(topic, partition, offset, max_records=1)
    if not msgs or msgs[0].offset != offset:
        raise NotFound(f"dead letter: nothing at partition {partition} offset {offset} of {topic}")
    return parse(msgs[0])


def replay_records(letters: Sequence[DeadLetter], settings: Settings) -> list[Record]:
    """Records that re-publish ``letters`` to their original channel: same bytes, key and headers
    (without the ``dlq.*`` ones), plus ``dlq.replayedFrom``."""
    out = []
    for d in letters:
        if d.truncated:
            continue  # only a prefix is left: nothing to re-publish
        headers = tuple((k, v) for k, v in d.headers if k not in DLQ_HEADERS and k not in _OWN_HEADERS)
        headers += ((H_REPLAYED_FROM, f"{d.partition}:{d.offset}".encode()),)
        topic = d.original_topic or topic_for(settings.env)
        # keyed records are placed by key (same partition as the original); unkeyed ones where they were
        partition = d.original_partition if d.key is None else None
        out.append(Record(topic=topic, value=d.value, key=d.key, headers=headers, partition=partition))
    return out


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What ``replay`` did: the letters re-published (and where each landed), and those held back because the
    channel's rules still refuse them (with today's reason): re-published, every service would dead-letter them
    again."""

    sent: list[tuple[DeadLetter, Delivery]]
    held: list[tuple[DeadLetter, str]]


def replay(settings: Settings, *, partition: int | None = None, offset: int | None = None,
           service: str | None = None, limit: int = 1000, transport: Transport | None = None) -> Replayed:
    """Re-publish dead letters to the channel after a fix: one (``partition`` and ``offset``), or the
    newest ``limit`` of ``service`` (or of every service). A letter the channel's rules (:func:`record_problem`,
    today's code) still refuse is held back: one asked for by position raises ContractError."""
    with _transport(settings, transport) as t:
        if partition is not None and offset is not None:
            letters = [show(settings, partition, offset, transport=t)]
            if letters[0].truncated:
                raise ContractError(f"dead letter {partition}:{offset}: holds only a prefix of a record too large"
                                    " to copy (dlq.truncated); it cannot be replayed")
        elif partition is not None or offset is not None:
            raise NotFound("dead letter: give both partition and offset, or neither")
        else:
            letters = list_dead_letters(settings, limit, service=service, transport=t)
            # one original record dead-lettered by several services is re-published once
            unique: dict[tuple[str, int | None, int | None], DeadLetter] = {}
            for d in letters:
                unique.setdefault((d.original_topic, d.original_partition, d.original_offset), d)
            letters = list(unique.values())
        records = replay_records(letters, settings)
        sendable: list[tuple[DeadLetter, Record]] = []
        held: list[tuple[DeadLetter, str]] = []
        for letter, record in zip([d for d in letters if not d.truncated], records, strict=True):
            _, problem = record_problem(record.value, record.key, record.headers)
            if problem is None:
                sendable.append((letter, record))
            else:
                held.append((letter, problem))
        if held and partition is not None:
            raise ContractError(f"dead letter {partition}:{offset}: the channel's rules still refuse it ({held[0][1]});"
                                " re-published, every service would dead-letter it again")
        if not sendable:
            return Replayed([], held)
        producer = t.producer()
        try:
            deliveries = producer.send([r for _, r in sendable])
        finally:
            producer.close()
    return Replayed([(d, delivery) for (d, _), delivery in zip(sendable, deliveries, strict=True)], held)
