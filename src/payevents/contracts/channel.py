"""The Payment Events Channel (v1.0.0) as code: address, env parameter, key rule, headers.

Pure: no I/O. See ``shared/seeds/000_*.txt`` (the channel page).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

from payevents.contracts.legacy import LEGACY_EVENT_TYPE
from payevents.errors import ContractError

CHANNEL_VERSION: Final = "1.0.0"
ADDRESS_TEMPLATE: Final = "payments.{env}.events"
DEAD_LETTER_SUFFIX: Final = ".dlq"
PROTOCOL: Final = "kafka"


class Env(StrEnum):
    """The channel's ``env`` parameter: options dev, sit, prod; default N/A (none)."""

    dev = "dev"
    sit = "sit"
    prod = "prod"


ENV_DESCRIPTION: Final = "Environment to use for payment events"


#: value -> Env: the lookup of every emitted event's headers (an Enum's own lookup and iteration cost more)
_ENVS: Final[dict[str, Env]] = {e.value: e for e in Env}


def parse_env(value: Any) -> Env:
    """Return the Env for ``value``; anything but exactly dev, sit or prod is a ContractError."""
    if isinstance(value, Env):
        return value
    env = _ENVS.get(value) if isinstance(value, str) else None
    if env is not None:
        return env
    options = ", ".join(e.value for e in Env)
    if not isinstance(value, str):
        raise ContractError(f"env: {value!r} is not one of {options} (it has no default)")
    try:
        return Env(value)
    except ValueError:
        raise ContractError(f"env: {value!r} is not one of {options} (it has no default)") from None


def topic_for(env: Env | str) -> str:
    """``payments.{env}.events`` for a valid env."""
    return ADDRESS_TEMPLATE.format(env=parse_env(env).value)


def dead_letter_topic_for(env: Env | str) -> str:
    """The dead-letter channel of ``payments.{env}.events``: ``payments.{env}.events.dlq``."""
    return topic_for(env) + DEAD_LETTER_SUFFIX


def topic_config(topic: str) -> dict[str, str]:
    """The configuration a topic is created with: deletion by age (``cleanup.policy=delete``), and a dead-letter
    channel (``….dlq``) kept for ever (``retention.ms=-1``): a dead letter is the only copy of a record no service
    could process, kept until someone looked at it or replayed it, whatever the retention of the channel it came
    from (7 days on a Kafka with its defaults). Both transports create topics with it."""
    config = {"cleanup.policy": "delete"}
    if topic.endswith(DEAD_LETTER_SUFFIX):
        config.update({"retention.ms": "-1", "retention.bytes": "-1"})
    return config


def partition_key(payment_id: str) -> bytes:
    """The key rule: key = ``data.paymentId``, UTF-8 encoded."""
    if not isinstance(payment_id, str) or not payment_id:
        raise ContractError("data.paymentId: required to build the partition key (non-empty string)")
    return payment_id.encode("utf-8")


#: the most partitions a channel may have: far above what one service's members use, at the limit of what one Kafka
#: topic is run with, and far below what the embedded log's record ids hold (a partition's id is kept in the bits
#: above an offset's 40). A typo of a few zeros made a 300 MB embedded log of 2,000,000 partitions
MAX_PARTITIONS: Final = 10_000


def partitions_problem(partitions: object) -> str | None:
    """Why ``partitions`` cannot be a channel's partition count (None when it can)."""
    if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
        return f"{partitions!r} must be a whole number from 1 to {MAX_PARTITIONS:,}"
    return None


#: the longest retention a channel may be given, in milliseconds (100 years; -1 keeps everything, as on Kafka): the
#: embedded log computes its cutoff in SQLite's 64-bit integers, and a longer one ended `topics trim` (and the
#: producers' retention pass) in an OverflowError
MAX_RETENTION_MS: Final = 100 * 365 * 24 * 3600 * 1000


def retention_problem(retention_ms: object) -> str | None:
    """Why ``retention_ms`` cannot be a channel's retention (None when it can)."""
    if type(retention_ms) is not int or not (retention_ms == -1 or 0 <= retention_ms <= MAX_RETENTION_MS):
        return (f"{retention_ms!r} must be -1 (keep everything) or 0 to {MAX_RETENTION_MS:,} milliseconds"
                " (100 years)")
    return None


#: the largest record (value + key + headers) a producer sends: librdkafka's default ``message.max.bytes``,
#: below the broker's default limit (1,048,588). Dead letters are built to fit in it (see runtime.deadletter).
MAX_RECORD_BYTES: Final = 1_000_000


def _show_key(key: bytes) -> str:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"(not UTF-8, {len(key)} bytes: 0x{key[:32].hex()}{'…' if len(key) > 32 else ''})"
    return repr(text) if len(text) <= 100 else repr(text[:100])[:-1] + f"…' ({len(key)} bytes)"


def key_problem(key: bytes | None, payment_id: str) -> str | None:
    """The key rule on read: None when ``key`` is the UTF-8 ``payment_id`` of the record's body, else why not,
    naming both values. A record with no key or another key would break per-payment order for everyone."""
    if key is not None and key == payment_id.encode("utf-8"):
        return None
    body = _show_key(payment_id.encode("utf-8"))
    if key is None:
        return f"the record has no key; the key must be the body's paymentId {body}"
    return f"the record key {_show_key(key)} is not the body's paymentId {body}"


# -- message headers -------------------------------------------------------------------------------
# Transport headers describe the body; audit headers carry the audit trail so that the event body
# (PaymentProcessed 1.0.0: the page's 20 properties) stays exactly as documented. Both are stored with
# the event in the outbox. Header values are UTF-8 strings.

H_EVENT_TYPE: Final = "eventType"
H_VERSION: Final = "version"
H_EVENT_ID: Final = "eventId"
H_CONTENT_TYPE: Final = "content-type"
CONTENT_TYPE_JSON: Final = "application/json"

H_CORRELATION_ID: Final = "correlationId"
H_CAUSATION_ID: Final = "causationId"
H_SOURCE: Final = "source"
H_PRODUCER: Final = "producer"
H_ENVIRONMENT: Final = "environment"
H_IDEMPOTENCY_KEY: Final = "idempotencyKey"

TRANSPORT_HEADERS: Final = (H_EVENT_TYPE, H_VERSION, H_EVENT_ID, H_CONTENT_TYPE)
AUDIT_HEADERS: Final = (H_CORRELATION_ID, H_CAUSATION_ID, H_SOURCE, H_PRODUCER, H_ENVIRONMENT, H_IDEMPOTENCY_KEY)


def event_type_header(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The type a record's headers say its body is: the value of its one ``eventType`` header, or None when it
    has none, more than one, or one that is not UTF-8 (such a record says nothing about itself and is read in
    full by every service). Consumers pass over the records whose header names a known type they do not handle
    without reading them (``runtime.consumer``); :func:`event_type_header_problem` keeps that header honest."""
    found: bytes | None = None
    for name, value in headers:
        if name == H_EVENT_TYPE:
            if found is not None:
                return None
            found = value
    if found is None:
        return None
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        return None


def event_type_header_problem(
    headers: Sequence[tuple[str, bytes]], body_type: str, *, legacy: bool = False
) -> str | None:
    """The header rule on read: a record that carries ``eventType`` headers carries exactly one, and it names the
    body's own ``eventType`` (for the channel page's older envelope: ``PAYMENT_PROCESSED`` or the type it is
    read as). None when it holds, else why not, naming both values. A record whose header lied would be passed
    over unread by the services that do not handle the type it claims, and applied by the others."""
    values = [value for name, value in headers if name == H_EVENT_TYPE]
    if not values:
        return None
    if len(values) > 1:
        return f"headers.{H_EVENT_TYPE}: given {len(values)} times; a record carries at most one"
    claimed = event_type_header(headers)
    allowed = (body_type, LEGACY_EVENT_TYPE) if legacy else (body_type,)
    if claimed in allowed:
        return None
    shown = repr(claimed) if claimed is not None else "(not UTF-8)"
    if claimed is not None and len(claimed) > 60:
        shown = repr(claimed[:60])[:-1] + "…'"
    return f"headers.{H_EVENT_TYPE}: {shown} is not the body's eventType {body_type!r}"


HEADER_DESCRIPTIONS: Final[dict[str, str]] = {
    H_EVENT_TYPE: "Event type of the body, e.g. PaymentProcessed",
    H_VERSION: "Schema version of the body, e.g. 1.0.0",
    H_EVENT_ID: "The body's eventId",
    H_CONTENT_TYPE: "Always application/json",
    H_CORRELATION_ID: "Shared by every event of one business flow (one payment)",
    H_CAUSATION_ID: "The command or event id that caused this event",
    H_SOURCE: "The service that emitted the event, e.g. payments",
    H_PRODUCER: "The producing software and version, e.g. payevents/0.1.0",
    H_ENVIRONMENT: "dev, sit or prod: the env of the channel the event was written for",
    H_IDEMPOTENCY_KEY: "The key that makes the emitting command idempotent (one event per key)",
}

# Dead-letter record headers (besides the original record's own headers, kept as they were).
DLQ_ORIGINAL_TOPIC: Final = "dlq.original.topic"
DLQ_ORIGINAL_PARTITION: Final = "dlq.original.partition"
DLQ_ORIGINAL_OFFSET: Final = "dlq.original.offset"
DLQ_SERVICE: Final = "dlq.service"
DLQ_REASON: Final = "dlq.reason"
DLQ_FAILED_AT: Final = "dlq.failedAt"
#: the headers every dead letter carries, in the order they are written
DEAD_LETTER_HEADERS: Final = (DLQ_ORIGINAL_TOPIC, DLQ_ORIGINAL_PARTITION, DLQ_ORIGINAL_OFFSET, DLQ_SERVICE, DLQ_REASON,
                              DLQ_FAILED_AT)


def audit_headers(
    *,
    correlation_id: str,
    causation_id: str,
    source: str,
    producer: str,
    environment: Env | str,
    idempotency_key: str,
) -> dict[str, str]:
    """The audit trail every emitted event carries, defined once."""
    values = {
        H_CORRELATION_ID: correlation_id,
        H_CAUSATION_ID: causation_id,
        H_SOURCE: source,
        H_PRODUCER: producer,
        H_ENVIRONMENT: parse_env(environment).value,
        H_IDEMPOTENCY_KEY: idempotency_key,
    }
    if all(type(value) is str and value for value in values.values()):
        return values
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ContractError(f"headers.{name}: required non-empty string")
    return values  # str subclasses
