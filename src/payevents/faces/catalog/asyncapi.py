"""One AsyncAPI 3.0 document for the channel: its env parameter, the five lifecycle messages with their
payload schemas and the audit headers, the Kafka key binding, the producer and the consumer groups; the
legacy PAYMENT_PROCESSED envelope (read-only: on the channel and received, never sent, with how it is
normalized); the dead-letter channel with its headers."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from payevents import __version__
from payevents.contracts import channel
from payevents.faces.catalog.model import KEY_RULE, Catalog, ChannelDoc, EventVersion, LegacyDoc, build_catalog
from payevents.faces.catalog.schema import resolve
from payevents.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
CHANNEL_ID = "paymentEvents"
DLQ_CHANNEL_ID = "paymentEventsDeadLetter"
DEAD_LETTER_MESSAGE = "DeadLetter"


def inline_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with every local ``$ref`` replaced by its target and ``$defs``/``$schema``/``$id`` dropped,
    so it can sit anywhere inside another document (event schemas are not recursive)."""
    root = schema

    def walk(node: Any, depth: int) -> Any:
        if depth > 64:
            raise ValueError("schema nests deeper than 64 levels (recursive $ref?)")
        if isinstance(node, Mapping):
            node = resolve(node, root) if "$ref" in node else node
            return {
                k: walk(v, depth + 1)
                for k, v in node.items()
                if k not in ("$defs", "definitions", "$schema", "$id")
            }
        if isinstance(node, list):
            return [walk(v, depth + 1) for v in node]
        return copy.deepcopy(node)

    return walk(schema, 0)  # type: ignore[no-any-return]


def _headers_schema() -> dict[str, Any]:
    names = (*channel.TRANSPORT_HEADERS, *channel.AUDIT_HEADERS)
    props: dict[str, Any] = {
        h: {"type": "string", "description": channel.HEADER_DESCRIPTIONS[h]} for h in names
    }
    props[channel.H_CONTENT_TYPE]["const"] = channel.CONTENT_TYPE_JSON
    props[channel.H_ENVIRONMENT]["enum"] = [e.value for e in channel.Env]
    return {
        "type": "object",
        "description": "Kafka record headers: the transport headers and the audit trail every emitted event carries.",
        "properties": props,
        "required": list(names),
    }


def _example_headers(v: EventVersion, event: Mapping[str, Any]) -> dict[str, str]:
    pid = str(event["data"]["paymentId"])
    return {
        channel.H_EVENT_TYPE: v.event_type,
        channel.H_VERSION: v.version,
        channel.H_EVENT_ID: str(event["eventId"]),
        channel.H_CONTENT_TYPE: channel.CONTENT_TYPE_JSON,
        **channel.audit_headers(
            correlation_id=pid,
            causation_id=str(event["eventId"]),
            source="payments",
            producer=f"payevents/{__version__}",
            environment=channel.Env.prod,
            idempotency_key=f"{pid}:{v.event_type}",
        ),
    }


def _message(v: EventVersion, summary: str) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "name": v.event_type,
        "title": f"{v.event_type} {v.version}",
        "summary": summary,
        "contentType": channel.CONTENT_TYPE_JSON,
        "headers": {"$ref": "#/components/schemas/PaymentEventHeaders"},
        "payload": {"$ref": f"#/components/schemas/{v.event_type}"},
        "correlationId": {
            "description": "All events of one business flow share the correlationId header",
            "location": f"$message.header#/{channel.H_CORRELATION_ID}",
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "minLength": 1, "description": KEY_RULE},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if v.example is not None:
        msg["examples"] = [
            {
                "name": f"{v.event_type}Example",
                "summary": f"A valid {v.event_type} {v.version}",
                "headers": _example_headers(v, v.example),
                "payload": v.example,
            }
        ]
    return msg


def _legacy_message(doc: LegacyDoc) -> dict[str, Any]:
    rules = "\n".join(f"- {r}" for r in doc.rules)
    return {
        "name": doc.event_type,
        "title": f"{doc.event_type} {doc.version} (legacy, read-only)",
        "summary": f"{doc.summary}.",
        "description": f"The older envelope of the channel page's code sample. Consumers accept it and normalize "
        f"it to {doc.normalizes_to} before any handler sees it; payevents never publishes it.\n\n"
        f"Normalization:\n{rules}",
        "contentType": channel.CONTENT_TYPE_JSON,
        "payload": {"$ref": f"#/components/schemas/{doc.event_type}"},
        "tags": [{"name": "legacy"}, {"name": "read-only"}],
        "bindings": {
            "kafka": {
                "key": {"type": "string", "minLength": 1, "description": "payload.paymentId (UTF-8)"},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "examples": [{"name": "ChannelPageSample", "summary": "The channel page's sample (normalized to "
                      f"eventId {doc.normalized.get('eventId')})", "payload": doc.example}],
    }


def _dead_letter_headers_schema(ch: ChannelDoc) -> dict[str, Any]:
    props: dict[str, Any] = {h: {"type": "string", "description": meaning} for h, meaning, _ in
                             ch.dead_letter_header_docs}
    for h, desc in (*ch.transport_headers, *ch.audit_headers):
        props.setdefault(h, {"type": "string", "description": f"Kept from the original record: {desc}"})
    return {
        "type": "object",
        "description": "A dead-letter record keeps the original record's key, value and headers, and adds these.",
        "properties": props,
        "required": [h for h, _, always in ch.dead_letter_header_docs if always],
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead letter",
        "summary": "A record a consuming service could not process (undecodable, invalid, card-number-like, or "
        "refused by its handler), kept with its reason; never dropped.",
        "description": "Key and value are the original record's (card-number-like digits masked but the last "
        "four). Operators list, show and replay them: payevents dlq list | show | replay.",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original record's value, as it was read (possibly not JSON)."},
        "bindings": {"kafka": {"key": {"type": "string", "description": "The original record's key"},
                               "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def asyncapi_document(settings: Settings, catalog: Catalog | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict; example amounts are Decimal)."""
    cat = catalog or build_catalog(settings)
    ch = cat.channel
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"PaymentEventHeaders": _headers_schema()}
    channel_messages: dict[str, Any] = {}
    for e in cat.events:
        v = e.latest
        schemas[e.event_type] = inline_schema(v.schema)
        messages[e.event_type] = _message(v, v.summary)
        channel_messages[e.event_type] = {"$ref": f"#/components/messages/{e.event_type}"}

    published = list(channel_messages)
    legacy_types: list[str] = []
    for lg in cat.legacy:
        schemas[lg.event_type] = inline_schema(lg.schema)
        messages[lg.event_type] = _legacy_message(lg)
        channel_messages[lg.event_type] = {"$ref": f"#/components/messages/{lg.event_type}"}
        legacy_types.append(lg.event_type)
    schemas["DeadLetterHeaders"] = _dead_letter_headers_schema(ch)
    messages[DEAD_LETTER_MESSAGE] = _dead_letter_message()

    def refs(types: Any) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{CHANNEL_ID}/messages/{t}"} for t in types if t in channel_messages]

    operations: dict[str, Any] = {
        "publishPaymentEvents": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{CHANNEL_ID}"},
            "title": "Payments publishes the lifecycle",
            "summary": "The payments service writes each event to its outbox in the payment's transaction; "
            "the relay publishes it keyed by paymentId.",
            "messages": refs(published),  # never the legacy envelope: it is read-only
            "bindings": {"kafka": {"clientId": {"type": "string", "enum": ["payevents-relay"]},
                                   "bindingVersion": KAFKA_BINDING_VERSION}},
        }
    }
    seen: set[str] = set()
    for e in cat.events:
        for c in e.consumers:
            if c.service in seen:
                continue
            seen.add(c.service)
            operations[f"consume{c.service.capitalize()}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{CHANNEL_ID}"},
                "title": f"{c.service} consumer group {c.group}",
                "summary": c.downstream_action or c.description,
                "description": c.description,
                # a consumer of PaymentProcessed also accepts the legacy envelope (normalized on read)
                "messages": refs([*c.event_types, *(legacy_types if "PaymentProcessed" in c.event_types else [])]),
                "bindings": {"kafka": {"groupId": {"type": "string", "enum": [c.group]},
                                       "bindingVersion": KAFKA_BINDING_VERSION}},
            }
    operations["deadLetterPaymentEvents"] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{DLQ_CHANNEL_ID}"},
        "title": "Consumers set poison records aside",
        "summary": "A consuming service writes a record it cannot process here, with the reason, inside the "
        "batch transaction, then commits its offset: poison never blocks and is never dropped.",
        "messages": [{"$ref": f"#/channels/{DLQ_CHANNEL_ID}/messages/{DEAD_LETTER_MESSAGE}"}],
    }
    servers: dict[str, Any] = {}
    if settings.is_kafka:
        for i, host in enumerate(settings.bootstrap_servers.split(",")):
            servers[f"broker{i}"] = {"host": host.strip(), "protocol": "kafka", "description": "PAYEVENTS_BROKER"}
    else:
        servers["local"] = {
            "host": "localhost:9092",
            "protocol": "kafka",
            "description": "A Kafka broker (set PAYEVENTS_BROKER=kafka://host:port; payevents also runs the "
            "same channel on its embedded log).",
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:payevents:payment-events",
        "info": {
            "title": "Payment Events Channel",
            "version": ch.version,
            "description": ch.description + " All events contain the payment ID for traceability and ordered "
            f"processing. Generated from payevents {__version__}.",
        },
        "defaultContentType": channel.CONTENT_TYPE_JSON,
        "servers": servers,
        "channels": {
            CHANNEL_ID: {
                "address": ch.address,
                "title": "Payment Events Channel",
                "summary": "All payment lifecycle events, keyed by paymentId.",
                "description": f"{ch.description}\n\nKey rule: {ch.key_rule}.\n\nDelivery: {ch.delivery_guarantee}"
                f"\n\nDead-letter channel: {ch.dead_letter_address}.",
                "servers": [{"$ref": f"#/servers/{name}"} for name in servers],
                "parameters": {
                    "env": {"description": ch.env_description, "enum": list(ch.env_options)},
                },
                "messages": channel_messages,
                "bindings": {
                    "kafka": {
                        "partitions": ch.partitions,
                        "topicConfiguration": {"cleanup.policy": ["delete"]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            },
            DLQ_CHANNEL_ID: {
                "address": ch.dead_letter_address,
                "title": "Payment Events Dead-Letter Channel",
                "summary": "Records of payments.{env}.events that a consuming service could not process, with why.",
                "description": "Same partition count as the channel. Each record keeps the original key, value "
                "and headers and adds the dead-letter headers (DeadLetterHeaders). Replayed to the channel with "
                "payevents dlq replay; consumers drop duplicates by eventId.",
                "servers": [{"$ref": f"#/servers/{name}"} for name in servers],
                "parameters": {
                    "env": {"description": ch.env_description, "enum": list(ch.env_options)},
                },
                "messages": {DEAD_LETTER_MESSAGE: {"$ref": f"#/components/messages/{DEAD_LETTER_MESSAGE}"}},
                "bindings": {
                    "kafka": {
                        "partitions": ch.partitions,
                        "topicConfiguration": {"cleanup.policy": ["delete"]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            },
        },
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
