"""Reading a published JSON Schema the way the catalog page shows it: one row per property, recursively."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

_MISSING: Any = object()

#: validation keywords shown as constraints (and compared by the diff)
CONSTRAINT_KEYWORDS: tuple[str, ...] = (
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
)


@dataclasses.dataclass(frozen=True)
class PropertyRow:
    """One property of an event schema, at any depth (``path`` like ``data.amount.currency``)."""

    path: str
    name: str
    depth: int
    types: tuple[str, ...]
    required: bool
    format: str | None = None
    pattern: str | None = None
    const: Any = _MISSING
    enum: tuple[Any, ...] | None = None
    description: str | None = None
    constraints: tuple[tuple[str, Any], ...] = ()
    additional_properties: bool | None = None

    @property
    def has_const(self) -> bool:
        return self.const is not _MISSING

    @property
    def type_label(self) -> str:
        label = " | ".join(self.types) if self.types else "any"
        return f"{label}<{self.format}>" if self.format else label


def resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref`` pointers (``#/$defs/X``, ``#/definitions/X``); sibling keywords win."""
    seen: set[str] = set()
    out = dict(node)
    while "$ref" in out:
        ref = out.pop("$ref")
        if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
            raise ValueError(f"$ref: {ref!r} is not a resolvable local reference")
        seen.add(ref)
        target: Any = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                raise ValueError(f"$ref: {ref!r} points nowhere")
            target = target[part]
        out = {**target, **out}
    return out


def _branches(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node itself and, for anyOf/oneOf/allOf, each resolved branch."""
    node = resolve(node, root)
    branches = [node]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, ()):
            branches.extend(_branches(sub, root))
    return branches


def _types(branches: list[dict[str, Any]]) -> tuple[str, ...]:
    out: list[str] = []
    for b in branches:
        t = b.get("type")
        names = t if isinstance(t, list) else [t] if t else []
        if not names and ("const" in b or "enum" in b):
            values = [b["const"]] if "const" in b else list(b["enum"])
            names = sorted({_json_type(v) for v in values})
        for n in names:
            if n not in out:
                out.append(n)
    return tuple(out)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _first(branches: list[dict[str, Any]], key: str) -> Any:
    for b in branches:
        if key in b:
            return b[key]
    return _MISSING


def _object_properties(
    branches: list[dict[str, Any]],
) -> tuple[dict[str, Any], set[str], bool | None]:
    props: dict[str, Any] = {}
    required: set[str] = set()
    additional: bool | None = None
    for b in branches:
        props.update(b.get("properties", {}))
        required.update(b.get("required", ()))
        if "additionalProperties" in b:
            additional = b["additionalProperties"] is not False
    return props, required, additional


def property_rows(schema: Mapping[str, Any]) -> list[PropertyRow]:
    """Every property of ``schema``, depth first in document order (objects and array items recurse)."""
    root = schema
    rows: list[PropertyRow] = []

    def walk(branches: list[dict[str, Any]], prefix: str, depth: int) -> None:
        props, required, _ = _object_properties(branches)
        for name, sub in props.items():
            path = f"{prefix}{name}"
            sub_branches = _branches(sub, root)
            const = _first(sub_branches, "const")
            enum = _first(sub_branches, "enum")
            if const is _MISSING and enum is not _MISSING and len(enum) == 1:
                const, enum = enum[0], _MISSING
            fmt = _first(sub_branches, "format")
            pattern = _first(sub_branches, "pattern")
            desc = _first(sub_branches, "description")
            constraints = tuple(
                (k, v) for k in CONSTRAINT_KEYWORDS if (v := _first(sub_branches, k)) is not _MISSING
            )
            _, _, additional = _object_properties(sub_branches)
            rows.append(
                PropertyRow(
                    path=path,
                    name=name,
                    depth=depth,
                    types=_types(sub_branches),
                    required=name in required,
                    format=None if fmt is _MISSING else fmt,
                    pattern=None if pattern is _MISSING else pattern,
                    const=const,
                    enum=None if enum is _MISSING else tuple(enum),
                    description=None if desc is _MISSING else desc,
                    constraints=constraints,
                    additional_properties=additional,
                )
            )
            walk(sub_branches, f"{path}.", depth + 1)
            items = _first(sub_branches, "items")
            if isinstance(items, Mapping):
                walk(_branches(items, root), f"{path}[].", depth + 1)

    walk(_branches(schema, root), "", 0)
    return rows


def count_properties(schema: Mapping[str, Any]) -> int:
    """The recursive property count the catalog page shows (PaymentProcessed 1.0.0: 20)."""
    return len(property_rows(schema))


def root_additional_properties(schema: Mapping[str, Any]) -> bool | None:
    return _object_properties(_branches(schema, schema))[2]
