"""Diff between two versions of an event's JSON Schema, flagging the changes that break someone.

A change is *breaking* when an event valid under one version can be rejected, or lose a field its
consumers read, under the other: the channel carries both versions at once during a migration, so a
contract change must be safe for old events read by new consumers and new events read by old ones.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from payevents.faces.catalog.schema import PropertyRow, property_rows, root_additional_properties

_LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems")
_UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems")


@dataclasses.dataclass(frozen=True)
class Change:
    path: str  # JSON path of the property ("" for the document)
    kind: str  # added, removed, required, optional, type, const, enum, format, pattern, constraint, ...
    breaking: bool
    message: str


@dataclasses.dataclass(frozen=True)
class SchemaDiff:
    old_version: str
    new_version: str
    changes: tuple[Change, ...]

    @property
    def breaking(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)

    @property
    def is_breaking(self) -> bool:
        return any(c.breaking for c in self.changes)

    @property
    def required_bump(self) -> str:
        """The smallest semver bump these changes need: major, minor, patch or none."""
        if self.is_breaking:
            return "major"
        if any(c.kind in ("added", "enum", "relaxed") for c in self.changes):
            return "minor"
        return "patch" if self.changes else "none"

    @property
    def version_problem(self) -> str | None:
        """Why the version numbers do not fit the changes (None when they do)."""
        old, new = _semver(self.old_version), _semver(self.new_version)
        if old is None or new is None or new <= old:
            return None
        if self.is_breaking and new[0] == old[0]:
            return (
                f"breaking changes need a new major version: {self.old_version} → {self.new_version} "
                "keeps the major number"
            )
        return None


def _semver(v: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _fmt(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _compare_row(old: PropertyRow, new: PropertyRow) -> list[Change]:
    p = old.path
    out: list[Change] = []
    if old.required and not new.required:
        out.append(Change(p, "optional", True, f"{p}: required → optional (consumers that read it may find it absent)"))
    elif new.required and not old.required:
        out.append(Change(p, "required", True, f"{p}: optional → required (older events without it become invalid)"))
    if set(old.types) != set(new.types):
        widened = set(old.types) < set(new.types)
        out.append(
            Change(
                p,
                "type",
                True,
                f"{p}: type {old.type_label.split('<')[0]} → {new.type_label.split('<')[0]}"
                + (" (wider: older consumers may reject new values)" if widened else ""),
            )
        )
    if old.has_const or new.has_const:
        if not (old.has_const and new.has_const and old.const == new.const):
            o = _fmt(old.const) if old.has_const else "none"
            n = _fmt(new.const) if new.has_const else "none"
            out.append(Change(p, "const", True, f"{p}: constant {o} → {n}"))
    if old.enum != new.enum and (old.enum is not None or new.enum is not None):
        before, after = set(old.enum or ()), set(new.enum or ())
        removed, added = before - after, after - before
        if old.enum is not None and new.enum is None:
            out.append(Change(p, "enum", True, f"{p}: enum {sorted(before, key=str)} dropped (any value now)"))
        elif old.enum is None:
            out.append(Change(p, "enum", True, f"{p}: now restricted to {sorted(after, key=str)}"))
        else:
            if removed:
                out.append(Change(p, "enum", True, f"{p}: values removed {sorted(removed, key=str)}"))
            if added:
                out.append(
                    Change(
                        p,
                        "enum",
                        True,
                        f"{p}: values added {sorted(added, key=str)} (consumers of the old version reject them)",
                    )
                )
    if old.format != new.format:
        breaking = new.format is not None
        out.append(Change(p, "format", breaking, f"{p}: format {old.format or 'none'} → {new.format or 'none'}"))
    if old.pattern != new.pattern:
        breaking = new.pattern is not None
        out.append(Change(p, "pattern", breaking, f"{p}: pattern {old.pattern or 'none'} → {new.pattern or 'none'}"))
    oc, nc = dict(old.constraints), dict(new.constraints)
    for name in sorted(set(oc) | set(nc)):
        was, now = oc.get(name), nc.get(name)
        if was == now:
            continue
        if was is None:
            tighter = True
        elif now is None:
            tighter = False
        elif name in _LOWER_BOUNDS:
            tighter = now > was
        elif name in _UPPER_BOUNDS:
            tighter = now < was
        else:  # multipleOf and anything else: any change may reject old values
            tighter = True
        kind = "constraint" if tighter else "relaxed"
        shown_old = "none" if was is None else was
        shown_new = "none" if now is None else now
        out.append(Change(p, kind, tighter, f"{p}: {name} {shown_old} → {shown_new}"))
    if old.additional_properties is not False and new.additional_properties is False:
        out.append(Change(p, "closed", True, f"{p}: no longer allows additional properties"))
    if old.description != new.description:
        out.append(Change(p, "description", False, f"{p}: description changed"))
    return out


def diff_schemas(
    old: Mapping[str, Any], new: Mapping[str, Any], old_version: str = "", new_version: str = ""
) -> SchemaDiff:
    """Every difference between two event schemas, property by property, each marked breaking or not."""
    old_rows = {r.path: r for r in property_rows(old)}
    new_rows = {r.path: r for r in property_rows(new)}
    changes: list[Change] = []
    for path, row in old_rows.items():
        if path not in new_rows:
            parent_gone = any(path.startswith(f"{q}.") for q in old_rows if q not in new_rows and q != path)
            if not parent_gone:
                changes.append(Change(path, "removed", True, f"{path}: removed (consumers that read it lose it)"))
            continue
        changes.extend(_compare_row(row, new_rows[path]))
    for path, row in new_rows.items():
        if path in old_rows:
            continue
        parent_new = any(path.startswith(f"{q}.") for q in new_rows if q not in old_rows and q != path)
        if parent_new:
            continue
        if row.required:
            changes.append(Change(path, "added", True, f"{path}: added as required (older events lack it)"))
        else:
            changes.append(Change(path, "added", False, f"{path}: added, optional"))
    if root_additional_properties(old) is not False and root_additional_properties(new) is False:
        changes.append(Change("", "closed", True, "document: no longer allows additional properties"))
    return SchemaDiff(old_version, new_version, tuple(changes))
