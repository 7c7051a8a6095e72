"""The catalog's reading of the published schemas: the recursive property table."""

from __future__ import annotations

import pytest

from payevents.contracts.events import EVENT_MODELS
from payevents.contracts.schema import load_schema
from payevents.faces.catalog import count_properties, property_rows


def test_payment_processed_has_the_pages_20_properties() -> None:
    schema = load_schema("PaymentProcessed", "1.0.0")
    assert count_properties(schema) == 20
    paths = [r.path for r in property_rows(schema)]
    assert paths[:5] == ["eventId", "eventType", "timestamp", "version", "data"]
    for path in ("data.amount.value", "data.amount.currency", "data.paymentMethod.last4", "data.metadata.orderId",
                 "data.invoiceId", "data.processedAt"):
        assert path in paths


def test_rows_carry_required_marks_constants_formats_and_patterns() -> None:
    rows = {r.path: r for r in property_rows(load_schema("PaymentProcessed", "1.0.0"))}
    assert rows["eventType"].has_const and rows["eventType"].const == "PaymentProcessed"
    assert rows["eventId"].required and rows["eventId"].format == "uuid"
    assert rows["timestamp"].format == "date-time"
    assert rows["version"].pattern == r"^\d+\.\d+\.\d+$"
    assert not rows["data.invoiceId"].required  # optional: absent, never null
    assert not rows["data.metadata.orderId"].required
    assert rows["data.amount"].required and rows["data.amount"].types == ("object",)


@pytest.mark.parametrize(("event_type", "version"), sorted(EVENT_MODELS))
def test_every_event_schema_can_be_tabled(event_type: str, version: str) -> None:
    rows = property_rows(load_schema(event_type, version))
    assert [r.path for r in rows if r.depth == 0] == ["eventId", "eventType", "timestamp", "version", "data"]
    assert all(r.types for r in rows), [r.path for r in rows if not r.types]


def test_refs_and_nesting_are_followed() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "list": {"type": "array", "items": {"$ref": "#/$defs/A"}}},
        "required": ["a"],
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"enum": ["k"]}},
                        "required": ["x"]}},
    }
    rows = {r.path: r for r in property_rows(schema)}
    assert list(rows) == ["a", "a.x", "a.y", "list", "list[].x", "list[].y"]
    assert rows["a.x"].required and not rows["a.y"].required
    assert rows["a.y"].const == "k"
    with pytest.raises(ValueError, match="points nowhere"):
        property_rows({"properties": {"b": {"$ref": "#/$defs/Missing"}}})
