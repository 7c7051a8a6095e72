"""The schema diff between two event versions, on the real PaymentProcessed 1.0.0 and synthetic successors."""

from __future__ import annotations

import copy
from typing import Any

from payevents.contracts.schema import load_schema
from payevents.faces.catalog import diff_schemas


def v1() -> dict[str, Any]:
    return load_schema("PaymentProcessed", "1.0.0")


def data_props(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["properties"]["data"]["properties"]  # type: ignore[no-any-return]


def by_path(diff: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c in diff.changes:
        out.setdefault(c.path, []).append(c)
    return out


def test_identical_versions_have_no_changes() -> None:
    d = diff_schemas(v1(), v1(), "1.0.0", "1.0.0")
    assert d.changes == () and not d.is_breaking and d.required_bump == "none"


def test_synthetic_2_0_0_flags_each_breaking_change() -> None:
    old = v1()
    new = copy.deepcopy(old)
    props = data_props(new)
    data = new["properties"]["data"]
    del props["gatewayReference"]  # removed
    data["required"].remove("gatewayReference")
    data["required"].append("invoiceId")  # optional -> required
    props["amount"]["properties"]["currency"]["pattern"] = "^(USD|EUR)$"  # pattern changed
    props["channelFee"] = {"type": "integer", "minimum": 0}  # added, optional
    props["settlementId"] = {"type": "string"}  # added, required
    data["required"].append("settlementId")
    props["paymentMethod"]["properties"]["last4"]["type"] = "integer"  # type changed
    props["paymentMethod"]["properties"]["last4"].pop("pattern", None)
    props["metadata"]["properties"]["description"]["description"] = "Free text"  # cosmetic
    new["properties"]["eventType"]["const"] = "PaymentSettled"

    d = diff_schemas(old, new, "1.0.0", "2.0.0")
    changes = by_path(d)
    assert [c.kind for c in changes["data.gatewayReference"]] == ["removed"]
    assert changes["data.gatewayReference"][0].breaking
    assert [(c.kind, c.breaking) for c in changes["data.invoiceId"]] == [("required", True)]
    assert [(c.kind, c.breaking) for c in changes["data.amount.currency"]] == [("pattern", True)]
    assert [(c.kind, c.breaking) for c in changes["data.channelFee"]] == [("added", False)]
    assert [(c.kind, c.breaking) for c in changes["data.settlementId"]] == [("added", True)]
    kinds = {c.kind: c.breaking for c in changes["data.paymentMethod.last4"]}
    assert kinds["type"] is True
    assert kinds["pattern"] is False  # a pattern removed only widens what is accepted
    assert [(c.kind, c.breaking) for c in changes["data.metadata.description"]] == [("description", False)]
    assert [(c.kind, c.breaking) for c in changes["eventType"]] == [("const", True)]
    assert d.is_breaking and d.required_bump == "major"
    assert d.version_problem is None  # 2.0.0 is a new major version
    assert "major" in (diff_schemas(old, new, "1.0.0", "1.1.0").version_problem or "")


def test_compatible_change_needs_only_a_minor_version() -> None:
    old = v1()
    new = copy.deepcopy(old)
    data_props(new)["channel"] = {"type": "string", "enum": ["web", "pos"]}
    data_props(new)["processedAt"]["maxLength"] = 10_000  # an upper bound appearing restricts: breaking
    data_props(new)["paymentId"]["maxLength"] = 100  # and one tightened (it was 255)
    d = diff_schemas(old, new, "1.0.0", "1.1.0")
    assert [(c.path, c.kind, c.breaking) for c in d.changes] == [
        ("data.paymentId", "constraint", True),
        ("data.processedAt", "constraint", True),
        ("data.channel", "added", False),
    ]
    del data_props(new)["processedAt"]["maxLength"]
    data_props(new)["paymentId"]["maxLength"] = 255
    d = diff_schemas(old, new, "1.0.0", "1.1.0")
    assert not d.is_breaking and d.required_bump == "minor"


def test_required_to_optional_and_relaxed_bounds() -> None:
    old = v1()
    new = copy.deepcopy(old)
    new["properties"]["data"]["required"].remove("customerId")
    data_props(new)["paymentId"].pop("minLength")
    d = by_path(diff_schemas(old, new))
    assert [(c.kind, c.breaking) for c in d["data.customerId"]] == [("optional", True)]
    assert [(c.kind, c.breaking) for c in d["data.paymentId"]] == [("relaxed", False)]


def test_removing_an_object_reports_it_once() -> None:
    old = v1()
    new = copy.deepcopy(old)
    del data_props(new)["metadata"]
    new["properties"]["data"]["required"].remove("metadata")
    d = diff_schemas(old, new)
    assert [(c.path, c.kind) for c in d.changes] == [("data.metadata", "removed")]
