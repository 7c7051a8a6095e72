"""What the catalog documents, collected from the code: the channel contract, the published event
schemas and examples, the producing service and the consumer services' registrations."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
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


@dataclasses.dataclass(frozen=True)
class Catalog:
    channel: ChannelDoc
    events: tuple[EventDoc, ...]

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
        dead_letter_headers=(
            channel.DLQ_ORIGINAL_TOPIC,
            channel.DLQ_ORIGINAL_PARTITION,
            channel.DLQ_ORIGINAL_OFFSET,
            channel.DLQ_SERVICE,
            channel.DLQ_REASON,
            channel.DLQ_FAILED_AT,
        ),
    )


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
    return Catalog(channel=channel_doc(settings), events=tuple(events))


def consumer_groups(catalog: Catalog) -> Sequence[Consumer]:
    seen: dict[str, Consumer] = {}
    for e in catalog.events:
        for c in e.consumers:
            seen.setdefault(c.service, c)
    return list(seen.values())
