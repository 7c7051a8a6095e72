"""The published JSON Schemas: valid draft 2020-12, 20 properties for PaymentProcessed, agreeing with the models."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from contracts_seed import channel_sample_event, seed_example
from jsonschema import Draft202012Validator

from payevents.contracts import EVENT_MODELS, codec, example_event, list_schemas, load_schema, schema_path, to_builtins
from payevents.contracts.schema import count_properties, schema_text
from payevents.errors import ContractError


def _model_properties(info: Any) -> int:
    """Properties at every depth of a msgspec model (the page's way of counting)."""
    if not isinstance(info, msgspec.inspect.StructType):
        return 0
    return sum(1 + _model_properties(f.type) for f in info.fields)


def test_every_model_and_the_legacy_envelope_has_a_shipped_schema() -> None:
    listed = {(s.event_type, s.version) for s in list_schemas()}
    assert listed == set(EVENT_MODELS) | {("PAYMENT_PROCESSED", "1.0")}
    for info in list_schemas():
        schema = load_schema(info.event_type, info.version)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        assert schema_path(info.event_type, info.version).name == info.filename
        assert json.loads(schema_text(info.event_type, info.version)) == schema
        if not info.legacy:
            assert schema["properties"]["eventType"]["const"] == info.event_type
            assert set(schema["required"]) == {"eventId", "eventType", "timestamp", "version", "data"}


def test_payment_processed_has_the_pages_20_properties() -> None:
    schema = load_schema("PaymentProcessed", "1.0.0")
    assert count_properties(schema) == 20
    model = EVENT_MODELS[("PaymentProcessed", "1.0.0")]
    assert _model_properties(msgspec.inspect.type_info(model)) == 20


@pytest.mark.parametrize(("event_type", "version"), sorted(EVENT_MODELS))
def test_schema_and_model_have_the_same_properties(event_type: str, version: str) -> None:
    def names(schema: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, sub in schema.get("properties", {}).items():
            out.add(prefix + key)
            out |= names(sub, prefix + key + ".")
        return out

    def model_names(info: Any, prefix: str = "") -> set[str]:
        out = set()
        if isinstance(info, msgspec.inspect.StructType):
            for f in info.fields:
                out.add(prefix + f.encode_name)
                out |= model_names(f.type, prefix + f.encode_name + ".")
        return out

    model = EVENT_MODELS[(event_type, version)]
    assert names(load_schema(event_type, version)) == model_names(msgspec.inspect.type_info(model))


def test_unknown_schema_is_a_clear_error() -> None:
    with pytest.raises(ContractError, match="PaymentProcessed"):
        load_schema("PaymentProcessed", "9.9.9")
    with pytest.raises(ContractError, match="not a known event type"):
        load_schema("PaymentDone")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """Valid examples of every event and structural mutations of them (no money or card rules involved)."""
    docs: list[tuple[str, dict[str, Any]]] = [("seed", seed_example())]
    for event_type, _ in EVENT_MODELS:
        base = json.loads(codec._ENCODER.encode(to_builtins(example_event(event_type))))
        docs.append((event_type, base))
        for key in list(base["data"]):
            d = copy.deepcopy(base)
            del d["data"][key]
            docs.append((f"{event_type} without data.{key}", d))
            d = copy.deepcopy(base)
            d["data"][key] = None
            docs.append((f"{event_type} data.{key}=null", d))
            d = copy.deepcopy(base)
            d["data"][key] = 12
            docs.append((f"{event_type} data.{key}=12", d))
        for key, value in [
            ("eventId", "nope"),
            ("eventId", 1),
            ("timestamp", "2025-12-11T10:30:00"),
            ("timestamp", "11/12/2025"),
            ("version", "1.0"),
            ("version", "1.2.3"),
            ("eventType", "Other"),
            ("extra", {"a": 1}),
        ]:
            d = copy.deepcopy(base)
            d[key] = value
            docs.append((f"{event_type} {key}={value!r}", d))
        for amount in [{"value": "99.99", "currency": "USD"}, {"value": -1, "currency": "USD"}, {"value": 5}]:
            d = copy.deepcopy(base)
            d["data"]["amount"] = amount
            docs.append((f"{event_type} amount={amount}", d))
    legacy = channel_sample_event()
    docs.append(("legacy", legacy))
    for key in ["payload", "metadata", "timestamp"]:
        d = copy.deepcopy(legacy)
        del d[key]
        docs.append((f"legacy without {key}", d))
    d = copy.deepcopy(legacy)
    d["payload"]["status"] = "FAILED"
    docs.append(("legacy FAILED", d))
    return docs


def _schema_valid(doc: dict[str, Any]) -> bool:
    from payevents.contracts.legacy import LEGACY_EVENT_TYPE, LEGACY_VERSION

    event_type = doc.get("eventType")
    if event_type == LEGACY_EVENT_TYPE:
        schema = load_schema(LEGACY_EVENT_TYPE, LEGACY_VERSION)
    elif (event_type, "1.0.0") in EVENT_MODELS:
        schema = load_schema(event_type, "1.0.0")
    else:
        return False
    validator = Draft202012Validator(schema, format_checker=codec.format_checker())
    return validator.is_valid(doc)


@pytest.mark.parametrize(("name", "doc"), _documents(), ids=[name for name, _ in _documents()])
def test_schema_and_model_agree(name: str, doc: dict[str, Any]) -> None:
    """The fast path (msgspec model + checks) accepts exactly what the published schema accepts."""
    raw = json.dumps(doc).encode()
    assert _schema_valid(doc) == (codec._fast(raw, False) is not None), name
    assert _schema_valid(doc) == (codec.validate_document(raw) == []), name
