"""The AsyncAPI 3.0 document, validated by the real @asyncapi/parser (tools/asyncapi)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from payevents.contracts import channel
from payevents.contracts.events import EVENT_TYPES
from payevents.faces.catalog import asyncapi_document, count_properties
from payevents.faces.catalog.jsonfmt import dumps
from payevents.services import CONSUMER_SERVICES
from payevents.settings import Settings

Validate = Callable[..., tuple[int, Any]]


def test_document_passes_the_asyncapi_parser(settings: Settings, asyncapi_validate: Validate) -> None:
    doc = asyncapi_document(settings)
    code, report = asyncapi_validate(dumps(doc))
    assert code == 0 and report["valid"], report["errors"]
    assert report["asyncapi"] == "3.0.0"
    [ch] = [c for c in report["channels"] if c["address"] == "payments.{env}.events"]  # + the dead-letter channel
    assert ch["parameters"] == [{"id": "env", "description": channel.ENV_DESCRIPTION, "enum": ["dev", "sit", "prod"]}]
    assert "default" not in ch["parameters"][0]
    assert ch["messages"][: len(EVENT_TYPES)] == list(EVENT_TYPES)  # then the read-only legacy envelope
    assert ch["kafka"]["partitions"] == settings.partitions
    messages = {m["name"]: m for m in report["messages"] if m["name"] in EVENT_TYPES}
    assert set(messages) == set(EVENT_TYPES)
    for m in messages.values():
        assert m["payloadType"] == "object"
        assert m["payloadProperties"] == ["eventId", "eventType", "timestamp", "version", "data"]
        assert set(m["headerProperties"]) >= set(channel.AUDIT_HEADERS)
        assert m["kafka"]["key"]["type"] == "string"
    ops = {o["id"]: o for o in report["operations"]}
    assert ops["publishPaymentEvents"]["action"] == "send"
    assert ops["publishPaymentEvents"]["messages"] == list(EVENT_TYPES)
    groups = {o["kafka"]["groupId"]["enum"][0] for o in ops.values() if o["action"] == "receive"}
    assert {m for o in ops.values() if o["action"] == "receive" for m in o["messages"]} >= set(EVENT_TYPES)
    assert groups == {f"payevents.{s}" for s in CONSUMER_SERVICES}
    # the payload is the full published schema, inlined: the page's 20 properties
    assert count_properties(doc["components"]["schemas"]["PaymentProcessed"]) == 20


def test_the_validator_rejects_broken_documents(settings: Settings, asyncapi_validate: Validate) -> None:
    doc = asyncapi_document(settings)
    dangling, v2_action, no_version = copy.deepcopy(doc), copy.deepcopy(doc), copy.deepcopy(doc)
    dangling["operations"]["publishPaymentEvents"]["channel"] = {"$ref": "#/channels/nowhere"}
    v2_action["operations"]["publishPaymentEvents"]["action"] = "publish"  # AsyncAPI 2 wording
    del no_version["info"]["version"]
    code, reports = asyncapi_validate(f"[{dumps(dangling)}, {dumps(v2_action)}, {dumps(no_version)}]", many=True)
    assert code == 1
    assert [r["valid"] for r in reports] == [False, False, False]
    assert all(r["errors"] for r in reports)
    assert any("nowhere" in e["message"] for e in reports[0]["errors"])
