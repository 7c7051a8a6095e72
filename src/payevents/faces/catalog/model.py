"""What the catalog documents, collected from the code: the channel contract, the published event
schemas and examples, the producing service and the consumer services' registrations."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from payevents.contracts import channel
from payevents.contracts.events import EVENT_MODELS, EVENT_TYPES
from payevents.faces.catalog.diff import SchemaDiff, diff_schemas
from payevents.faces.catalog.schema import PropertyRow, property_rows
from payevents.settings import Settings

log = logging.getLogger(__name__)

#: The service that publishes the lifecycle events (through its outbox and the relay).
PRODUCER_SERVICE = "payments"
DELIVERY_GUARANTEE = (
    "At-least-once delivery with exactly-once effects: the producer's state change and the event commit in "
    "one outbox transaction, the relay publishes with acks=all from an idempotent producer, and each consumer "
    "applies a batch's effects together with its \"event seen\" marks (unique eventId per service) before "
    "committing offsets. Records that cannot be processed go to the dead-letter channel with their reason."
)
KEY_RULE = "key = data.paymentId (UTF-8): all events of one payment land on one partition, in order"


def semver_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (-1,)


@dataclasses.dataclass(frozen=True)
class SchemaSource:
    """Where schemas and examples come from: ``(eventType, version) -> JSON Schema`` and an example maker."""

    schemas: Mapping[tuple[str, str], Mapping[str, Any]]
    example: Callable[[str, str], Mapping[str, Any] | None]

    @classmethod
    def from_contracts(cls) -> SchemaSource:
        """The published schema files and examples shipped in :mod:`payevents.contracts`."""
        from payevents.contracts import examples
        from payevents.contracts.schema import list_schemas, load_schema

        schemas: dict[tuple[str, str], Mapping[str, Any]] = {}
        for entry in list_schemas():
            if getattr(entry, "legacy", False):
                continue
            event_type, version = _type_version(entry)
            schemas[(event_type, version)] = load_schema(event_type, version)

        def example(event_type: str, version: str) -> Mapping[str, Any] | None:
            if (event_type, version) not in EVENT_MODELS:
                return None
            doc = _plain(examples.example_json(event_type, version))
            return _order_like(doc, schemas[(event_type, version)], schemas[(event_type, version)])

        return cls(schemas=schemas, example=example)

    def with_schema(self, event_type: str, version: str, schema: Mapping[str, Any]) -> SchemaSource:
        """A copy with one more (or a replaced) schema version, e.g. a proposed next version."""
        return dataclasses.replace(self, schemas={**self.schemas, (event_type, version): schema})


def _type_version(entry: Any) -> tuple[str, str]:
    if isinstance(entry, tuple | list):
        return str(entry[0]), str(entry[1])
    for a, b in (("event_type", "version"), ("eventType", "version"), ("type", "version")):
        if hasattr(entry, a) and hasattr(entry, b):
            return str(getattr(entry, a)), str(getattr(entry, b))
    if isinstance(entry, Mapping):
        return str(entry.get("eventType") or entry.get("event_type") or entry["type"]), str(entry["version"])
    raise TypeError(f"list_schemas() entry {entry!r}: expected (eventType, version)")


def _plain(value: Any) -> Mapping[str, Any]:
    """An example as a JSON document (amounts stay exact Decimals)."""
    from payevents.faces.catalog.jsonfmt import loads

    if isinstance(value, Mapping):
        return value
    if isinstance(value, bytes | str):
        return loads(value)  # type: ignore[no-any-return]
    from payevents.contracts.codec import encode_event

    return loads(encode_event(value))  # type: ignore[no-any-return]


def _order_like(doc: Any, node: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """``doc`` with its keys in the schema's property order (the order the page's table shows)."""
    from payevents.faces.catalog.schema import resolve

    if not isinstance(doc, Mapping):
        return doc
    props = resolve(node, root).get("properties", {})
    keys = [k for k in props if k in doc] + [k for k in doc if k not in props]
    return {k: _order_like(doc[k], props[k], root) if k in props else doc[k] for k in keys}


@dataclasses.dataclass(frozen=True)
class Consumer:
    service: str
    group: str
    description: str
    downstream_action: str
    event_types: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class EventVersion:
    event_type: str
    version: str
    schema: Mapping[str, Any]
    rows: tuple[PropertyRow, ...]
    example: Mapping[str, Any] | None
    summary: str
    emitted_when: str

    @property
    def property_count(self) -> int:
        return len(self.rows)

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema, indent=2, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class EventDoc:
    event_type: str
    versions: tuple[EventVersion, ...]  # oldest first
    producers: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    business_rules: tuple[str, ...]
    diffs: Mapping[tuple[str, str], SchemaDiff]  # every (older, newer) pair

    @property
    def latest(self) -> EventVersion:
        return self.versions[-1]

    def previous_diff(self, version: str) -> SchemaDiff | None:
        names = [v.version for v in self.versions]
        i = names.index(version)
        return self.diffs[(names[i - 1], version)] if i > 0 else None


@dataclasses.dataclass(frozen=True)
class ChannelDoc:
    version: str
    address: str
    description: str
    protocol: str
    env_description: str
    env_options: tuple[str, ...]
    env_default: str
    key_rule: str
    partitions: int
    delivery_guarantee: str
    dead_letter_address: str
    transport_headers: tuple[tuple[str, str], ...]
    audit_headers: tuple[tuple[str, str], ...]
    dead_letter_headers: tuple[str, ...]
    #: (header, meaning, always present?) of a dead-letter record, besides the original record's headers
    dead_letter_header_docs: tuple[tuple[str, str, bool], ...] = ()


@dataclasses.dataclass(frozen=True)
class LegacyDoc:
    """A read-only envelope: accepted from the channel, normalized on read, never emitted."""

    event_type: str
    version: str
    normalizes_to: str
    summary: str
    schema: Mapping[str, Any]
    rows: tuple[PropertyRow, ...]
    #: how it is normalized, from the upcaster's own documentation
    rules: tuple[str, ...]
    #: the channel page's sample, and what the upcaster makes of it
    example: Mapping[str, Any]
    normalized: Mapping[str, Any]
    extras: Mapping[str, Any]

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema, indent=2, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Catalog:
    channel: ChannelDoc
    events: tuple[EventDoc, ...]
    legacy: tuple[LegacyDoc, ...] = ()

    def event(self, event_type: str) -> EventDoc:
        for e in self.events:
            if e.event_type == event_type:
                return e
        raise KeyError(event_type)


def channel_doc(settings: Settings) -> ChannelDoc:
    return ChannelDoc(
        version=channel.CHANNEL_VERSION,
        address=channel.ADDRESS_TEMPLATE,
        description=(
            "The central stream for all payment lifecycle events: initiation, authorization, capture, "
            "completion and failure. Events for a specific payment are processed in sequence because "
            "paymentId is the partition key."
        ),
        protocol=channel.PROTOCOL,
        env_description=channel.ENV_DESCRIPTION,
        env_options=tuple(e.value for e in channel.Env),
        env_default="N/A",
        key_rule=KEY_RULE,
        partitions=settings.partitions,
        delivery_guarantee=DELIVERY_GUARANTEE,
        dead_letter_address=channel.ADDRESS_TEMPLATE + channel.DEAD_LETTER_SUFFIX,
        transport_headers=tuple((h, channel.HEADER_DESCRIPTIONS[h]) for h in channel.TRANSPORT_HEADERS),
        audit_headers=tuple((h, channel.HEADER_DESCRIPTIONS[h]) for h in channel.AUDIT_HEADERS),
        dead_letter_headers=channel.DEAD_LETTER_HEADERS,
        dead_letter_header_docs=dead_letter_header_docs(),
    )


def dead_letter_header_docs() -> tuple[tuple[str, str, bool], ...]:
    """What each header of a dead-letter record means (the runtime's own names)."""
    from payevents.runtime import deadletter

    meanings = {
        channel.DLQ_ORIGINAL_TOPIC: "The topic the record was read from",
        channel.DLQ_ORIGINAL_PARTITION: "Its partition there",
        channel.DLQ_ORIGINAL_OFFSET: "Its offset there",
        channel.DLQ_SERVICE: "The consuming service that set it aside",
        channel.DLQ_REASON: "Why (the field and the rule; card digits masked)",
        channel.DLQ_FAILED_AT: "When (RFC 3339, UTC)",
    }
    docs = [(h, meanings.get(h, h), True) for h in deadletter.DLQ_HEADERS]
    redacted = getattr(deadletter, "H_REDACTED", None)
    if redacted:
        docs.append((redacted, "Present when card-number-like digits in the value were masked (all but the last "
                               "four) before the record was kept", False))
    return tuple(docs)


#: the channel page's sample envelope (its timestamp fixed), read-only
LEGACY_SAMPLE: dict[str, Any] = {
    "eventType": "PAYMENT_PROCESSED",
    "timestamp": "2024-11-11T10:30:00",
    "version": "1.0",
    "payload": {
        "paymentId": "PAY-123-456",
        "orderId": "ORD-789",
        "amount": {"value": 99.99, "currency": "USD"},
        "status": "SUCCESS",
        "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12", "expiryYear": "2025",
                          "network": "VISA"},
        "transactionDetails": {"processorId": "stripe_123xyz", "authorizationCode": "AUTH123", "captureId": "CAP456"},
    },
    "metadata": {"correlationId": "corr-123-abc", "merchantId": "MERCH-456", "source": "payment_service",
                 "environment": "prod", "idempotencyKey": "PAY-123-456-2024-11-11-99.99"},
}


def _normalization_rules(doc: str) -> tuple[str, ...]:
    """The bullet list under "Normalization" in the upcaster's docstring."""
    rules: list[str] = []
    in_list = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("normalization"):
            in_list = True
            continue
        if not in_list:
            continue
        if stripped.startswith("* "):
            rules.append(stripped[2:])
        elif stripped and rules and line.startswith("  "):
            rules[-1] += " " + stripped
        elif rules and not stripped:
            break
    return tuple(r.replace("``", "").replace(":data:`", "").replace("`", "") for r in rules)


def legacy_docs() -> tuple[LegacyDoc, ...]:
    """The legacy PAYMENT_PROCESSED 1.0 envelope: its schema, how the upcaster normalizes it, an example."""
    from payevents.contracts import codec, legacy
    from payevents.contracts.schema import list_schemas, load_schema
    from payevents.faces.catalog.jsonfmt import loads

    out: list[LegacyDoc] = []
    for entry in list_schemas():
        if not getattr(entry, "legacy", False):
            continue
        event_type, version = _type_version(entry)
        schema = load_schema(event_type, version)
        decoded = codec.decode_event(json.dumps(LEGACY_SAMPLE).encode())
        target = str(schema.get("x-normalizes-to", "PaymentProcessed 1.0.0"))
        out.append(LegacyDoc(
            event_type=event_type, version=version, normalizes_to=target,
            summary=f"Read-only legacy envelope: accepted on read, normalized to {target}, never emitted",
            schema=schema, rows=tuple(property_rows(schema)), rules=_normalization_rules(legacy.__doc__ or ""),
            example=LEGACY_SAMPLE, normalized=loads(json.dumps(codec.to_builtins(decoded.event), default=str)),
            extras=loads(json.dumps(decoded.extras, default=str)),
        ))
    return tuple(out)


def consumers() -> tuple[Consumer, ...]:
    """The downstream services as registered in code (their ServiceDef handlers)."""
    from payevents.services import CONSUMER_SERVICES, load_service

    out: list[Consumer] = []
    for name in CONSUMER_SERVICES:
        try:
            svc = load_service(name)
        except ModuleNotFoundError as exc:
            if exc.name in (f"payevents.services.{name}", f"payevents.services.{name}.service"):
                log.warning("catalog: service %s is not installed; not listed as a consumer", name)
                continue
            raise
        out.append(
            Consumer(
                service=svc.name,
                group=svc.group,
                description=svc.description,
                downstream_action=svc.downstream_action,
                event_types=tuple(svc.handlers),
            )
        )
    return tuple(out)


def publish_sla_seconds() -> float:
    """The business rule's publish deadline, as the relay enforces it."""
    try:
        relay = importlib.import_module("payevents.runtime.relay")
    except ModuleNotFoundError:
        return 5.0
    for name in ("PUBLISH_SLA_S", "PUBLISH_SLA_SECONDS", "SLA_SECONDS", "PUBLISH_SLA"):
        value = getattr(relay, name, None)
        if isinstance(value, int | float):
            return float(value)
    return 5.0


def business_rules() -> tuple[str, ...]:
    sla = publish_sla_seconds()
    audit = ", ".join(channel.AUDIT_HEADERS)
    return (
        f"Event must be published within {sla:g} seconds of payment completion: the event commits with the "
        "payment in the outbox, the relay measures every publish delay (payevents_publish_delay_seconds) and "
        "logs a breach with the eventId.",
        "Event is immutable once published: the outbox refuses UPDATE and DELETE (database triggers) and every "
        "stored event is hash-chained to the one before (payevents audit verify).",
        "Idempotency key ensures no duplicate events: the key is unique in the outbox, a retried command returns "
        "the first event, and every consumer applies an eventId at most once.",
        f"Includes audit trail information for compliance, as message headers: {audit}.",
    )


def _docstring(model: Any) -> str:
    return inspect.cleandoc(model.__doc__ or "").strip()


_EMITTED_WHEN = {
    "PaymentInitiated": "Published when the Payments service creates a payment (before it goes to the gateway).",
    "PaymentAuthorized": "Published when the gateway authorizes the amount; funds are reserved, not yet captured.",
    "PaymentCaptured": "Published when the authorized funds are captured.",
    "PaymentProcessed": (
        "Published after: 1. payment authorization is successful; 2. payment capture is completed; "
        "3. the transaction is recorded in the payment system; 4. all validation checks pass."
    ),
    "PaymentFailed": "Published when a payment fails from any open state (declined, expired, cancelled, ...).",
}


def build_catalog(settings: Settings, source: SchemaSource | None = None) -> Catalog:
    """Everything the site and the AsyncAPI document show, read from the code."""
    source = source or SchemaSource.from_contracts()
    cons = consumers()
    rules = business_rules()
    by_type: dict[str, list[str]] = {}
    for event_type, version in source.schemas:
        by_type.setdefault(event_type, []).append(version)
    order = [t for t in EVENT_TYPES if t in by_type] + sorted(t for t in by_type if t not in EVENT_TYPES)
    events: list[EventDoc] = []
    for event_type in order:
        versions: list[EventVersion] = []
        for version in sorted(by_type[event_type], key=semver_key):
            schema = source.schemas[(event_type, version)]
            model = EVENT_MODELS.get((event_type, version))
            summary = str(schema.get("description", "")) or (_docstring(model) if model is not None else "")
            summary = summary or event_type
            versions.append(
                EventVersion(
                    event_type=event_type,
                    version=version,
                    schema=schema,
                    rows=tuple(property_rows(schema)),
                    example=source.example(event_type, version),
                    summary=summary.splitlines()[0],
                    emitted_when=_EMITTED_WHEN.get(event_type, summary),
                )
            )
        diffs = {
            (a.version, b.version): diff_schemas(a.schema, b.schema, a.version, b.version)
            for i, a in enumerate(versions)
            for b in versions[i + 1 :]
        }
        events.append(
            EventDoc(
                event_type=event_type,
                versions=tuple(versions),
                producers=(PRODUCER_SERVICE,),
                consumers=tuple(c for c in cons if event_type in c.event_types),
                business_rules=rules,
                diffs=diffs,
            )
        )
    return Catalog(channel=channel_doc(settings), events=tuple(events), legacy=legacy_docs())
