"""Decode + validate incoming bytes, validate + encode outgoing events.

INTERFACE (stable, used by runtime and services):

* ``decode_event(raw: bytes) -> DecodedEvent`` — canonical events of every known type/version and the
  legacy envelope (normalized, ``legacy=True``). Raises :class:`EventValidationError` naming JSON
  paths and rules. Unknown extra fields are tolerated on read.
* ``encode_event(event) -> bytes`` — strict: validates (no unknown fields, canonical-required fields
  present, published version, money rules, card guard) and encodes; amounts as JSON numbers, losslessly.

Two paths. The fast path is a msgspec typed decode (Decimal parsed losslessly from JSON numbers) plus
cheap checks: money (ISO 4217, > 0, minor units), canonical-required fields, a card-number prefilter on
the raw bytes. Only when something fails does the precise path run: the shipped JSON Schema (draft
2020-12) plus our own checks, producing every error with its JSON path, rule and (never for card data)
the bad value. The precise path is the authority: it decides, the fast path only accepts quickly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import msgspec

from payevents.contracts import cardguard, legacy
from payevents.contracts.events import (
    CANONICAL_REQUIRED,
    EVENT_MODELS,
    UUID_PATTERN,
    AwareDatetime,
    PaymentEvent,
)
from payevents.contracts.money import MINOR_UNITS, amount_ok, amount_problem
from payevents.contracts.numbers import OutOfRange, json_integer, json_number
from payevents.contracts.schema import load_schema
from payevents.errors import PayeventsError

if typing.TYPE_CHECKING:  # jsonschema is imported by the precise path only (a worker's start skips its ~35 ms)
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import ValidationError as SchemaError


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    path: str  # JSON path like "data.amount.currency" ("" for the document itself)
    rule: str  # e.g. "iso4217", "required", "pattern", "card-number"
    message: str  # full sentence naming the path, the rule and (except card data) the bad value

    def __str__(self) -> str:
        return self.message


class EventValidationError(PayeventsError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class DecodedEvent(msgspec.Struct, frozen=True):
    """One decoded event (immutable; a msgspec Struct rather than a frozen dataclass because every consumer
    builds one per record and a Struct is built in C, about five times cheaper)."""

    event: PaymentEvent
    #: True when normalized from the channel page's older envelope (PAYMENT_PROCESSED 1.0)
    legacy: bool = False
    #: what the event carried beyond the model that services may use (e.g. legacy metadata.merchantId)
    extras: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return self.event.eventType

    @property
    def event_id(self) -> str:
        return self.event.eventId

    @property
    def version(self) -> str:
        return self.event.version

    @property
    def payment_id(self) -> str:
        return self.event.data.paymentId


# -- explicit limits (checked up front, before any parser runs) ------------------------------------------

#: the largest document read or written: an event is well under 2 KiB; 64 KiB leaves room for long free text
#: while keeping every record (and its dead letter) far below the broker's record limit
MAX_DOCUMENT_BYTES: Final = 64 * 1024
#: the deepest nesting of objects/arrays (the document itself is level 1); the deepest published path,
#: data.amount.value, is level 3
MAX_DEPTH: Final = 16
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET: Final = re.compile(rb"[\[\]{}]")


def nesting_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep objects and arrays nest in ``raw`` (JSON text), counted without parsing it: exact when the
    answer is above ``limit`` (counting stops there), else at most ``limit`` (an upper bound). Brackets inside
    strings do not count; an unterminated string counts its brackets."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return raw.count(b"[") + raw.count(b"{")  # an upper bound, and within the limit
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if m.group(0) in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _check_limits(raw: bytes) -> None:
    """Raise the size or depth error of ``raw``, if any: the hot path's form of :func:`limit_problem` (the
    bracket count bounds the depth, so only a document with more brackets than the limit is scanned)."""
    if len(raw) > MAX_DOCUMENT_BYTES or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        problem = limit_problem(raw)
        if problem is not None:
            raise EventValidationError([problem])


def limit_problem(raw: bytes) -> FieldError | None:
    """The size or depth rule ``raw`` breaks, or None: checked before any parser sees the document."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        return FieldError("", "size", f"$: the document is {len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes")
    if nesting_depth(raw) > MAX_DEPTH:
        return FieldError("", "depth", f"$: objects and arrays nest deeper than the limit of {MAX_DEPTH} levels")
    return None


# -- tables built once ------------------------------------------------------------------------------

_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")
_MODELS: Final[frozenset[type]] = frozenset(EVENT_MODELS.values())
_KNOWN_TYPES: Final = tuple(dict.fromkeys(t for t, _ in EVENT_MODELS))


def _major(version: str) -> str:
    return version.split(".", 1)[0]


#: (eventType, major) -> (model, its decoder): a reader accepts every minor/patch of a published major
_READERS: Final[dict[tuple[str, str], tuple[type, msgspec.json.Decoder[Any]]]] = {}
for (_t, _v), _m in sorted(EVENT_MODELS.items(), key=lambda kv: tuple(int(p) for p in kv[0][1].split("."))):
    _READERS[(_t, _major(_v))] = (_m, msgspec.json.Decoder(_m))
_LEGACY_DECODER: Final = msgspec.json.Decoder(legacy.LegacyPaymentProcessed)


class _Peek(msgspec.Struct):
    eventType: Any = None
    version: Any = None


_PEEK: Final = msgspec.json.Decoder(_Peek)
_DOCUMENT: Final = msgspec.json.Decoder(float_hook=json_number)  # any JSON, numbers as the readers read them
_SEMVER: Final = re.compile(r"^\d+\.\d+\.\d+$")


def _presence_check(paths: tuple[str, ...]) -> Callable[[Any], bool]:
    """One compiled expression telling whether every dotted attribute path (and its parents) is set."""
    chain: list[str] = []
    for path in paths:
        names = path.split(".")
        if not all(n.isidentifier() for n in names):
            raise ValueError(f"CANONICAL_REQUIRED: {path!r} is not a dotted attribute path")
        for i in range(1, len(names) + 1):
            expr = "ev." + ".".join(names[:i])
            if expr not in chain:
                chain.append(expr)
    source = "lambda ev: " + " and ".join(f"{expr} is not UNSET" for expr in chain)
    check: Callable[[Any], bool] = eval(source, {"UNSET": msgspec.UNSET})  # built from our constants only
    return check


#: eventType -> "every canonical-required field is present" (CANONICAL_REQUIRED, compiled)
_CANONICAL_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    t: _presence_check(paths) for t, paths in CANONICAL_REQUIRED.items()
}
#: b"PaymentProcessed" -> (model, decoder) of the latest published version: the shortcut past the peek decode
_BY_TYPE: Final = {t.encode(): (_READERS[(t, _major(v))][1], _major(v) + ".") for (t, v) in EVENT_MODELS}
_TYPE_KEY: Final = b'"eventType":"'


#: a "value" key holding a JSON string (msgspec would read "99.99" as a Decimal; the schema wants a number)
_STRING_VALUE: Final = re.compile(rb'"value"[ \t\n\r]*:[ \t\n\r]*"')


def _string_value(raw: bytes) -> bool:
    """True when some ``"value"`` key holds a JSON string, as the bytes show it (no JSON escapes in ``raw``:
    :func:`_raw_ok` judges a document with escapes by its decoded keys)."""
    return _STRING_VALUE.search(raw) is not None


def _string_in_value(doc: Any) -> bool:
    """True when some ``"value"`` key of the decoded document holds a string."""
    if isinstance(doc, dict):
        for key, item in doc.items():
            if (key == "value" and isinstance(item, str)) or _string_in_value(item):
                return True
    elif isinstance(doc, list):
        return any(_string_in_value(item) for item in doc)
    return False


def nul_paths(doc: Any, path: str = "") -> Iterator[str]:
    """Paths of the strings (keys included) of a decoded document that hold U+0000. No store can keep one:
    PostgreSQL refuses it in any text, and no payment's text has a use for it."""
    if isinstance(doc, str):
        if "\x00" in doc:
            yield path
    elif isinstance(doc, dict):
        for key, item in doc.items():
            if "\x00" in key:
                yield _join(path, key)
            yield from nul_paths(item, _join(path, key))
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from nul_paths(item, _join(path, i))


#: the years a time of an event may lie in, as written: not before the Unix epoch (the channel's timestamps are
#: milliseconds since it), and far enough from the calendar's end that the time's UTC instant exists
#: (``0001-01-01T00:00:00+01:00`` and ``9999-12-31T23:59:59-01:00`` have none: every service reads times in UTC)
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 9998
TIME_RANGE_MESSAGE: Final = f"lies outside the years {MIN_YEAR}–{MAX_YEAR}"


def _data_times(model: type) -> tuple[str, ...]:
    data = next(f.type for f in msgspec.structs.fields(model) if f.name == "data")
    return tuple(f.name for f in msgspec.structs.fields(data) if datetime in (typing.get_args(f.type) or (f.type,)))


_DATA_TIMES: Final = {model: _data_times(model) for model in EVENT_MODELS.values()}


def times_out_of_range(event: Any) -> list[str]:
    """Paths of the event's times (its ``timestamp`` and its data's ``...At``) outside MIN_YEAR..MAX_YEAR."""
    out = [] if MIN_YEAR <= event.timestamp.year <= MAX_YEAR else ["timestamp"]
    for name in _DATA_TIMES[type(event)]:
        if not MIN_YEAR <= getattr(event.data, name).year <= MAX_YEAR:
            out.append(f"data.{name}")
    return out


def _time_errors(paths: list[str], doc: dict[str, Any]) -> list[FieldError]:
    errors = []
    for path in paths:
        value: Any = doc
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        errors.append(FieldError(path, "time-range", f"{path}: {_show(value)} {TIME_RANGE_MESSAGE}"))
    return errors


def _raw_ok(raw: bytes) -> bool:
    """The fast path's rules over the whole document: no amount written as a string, no card number, no NUL.

    Without a backslash the bytes show every key and string as it is, so two scans of the bytes decide and
    the document is decoded for the card guard only when its prefilter finds a candidate (JSON has no raw NUL:
    only the escape ``\\u0000`` writes one). A JSON escape could spell a ``"value"`` key, card digits or a NUL,
    so a document with one is decoded and its strings judged."""
    escaped = b"\\" in raw
    if not escaped:
        if _string_value(raw):
            return False
        if not cardguard.raw_may_contain_card(raw):
            return True
    try:
        doc = _DOCUMENT.decode(raw)
    except msgspec.DecodeError:
        return False  # the precise path decides
    if escaped and (_string_in_value(doc) or (b"\\u0000" in raw and next(nul_paths(doc), None) is not None)):
        return False
    return not cardguard.has_card_path(doc)


# -- the fast path -----------------------------------------------------------------------------------


def _fast(raw: bytes, strict: bool) -> DecodedEvent | None:
    """The event when every cheap check passes, else None (the precise path then decides). decode_event has
    checked the limits before; encode_event does not apply them to a model it encodes (see docs/architecture.md)."""
    event: Any = None
    start = raw.find(_TYPE_KEY)
    if start >= 0:  # compact JSON (what we emit): go straight to the model named there
        start += len(_TYPE_KEY)
        shortcut = _BY_TYPE.get(raw[start : raw.find(b'"', start)])
        if shortcut is not None:
            try:
                event = shortcut[0].decode(raw)
            except msgspec.ValidationError:
                return None
            if not event.version.startswith(shortcut[1]):
                event = None  # another major: the peek below picks its reader
    if event is None:
        try:
            peek = _PEEK.decode(raw)
        except msgspec.DecodeError:
            return None
        event_type = peek.eventType
        version = peek.version
        if event_type == legacy.LEGACY_EVENT_TYPE:
            return None if strict else _fast_legacy(raw)
        if not isinstance(version, str) or not isinstance(event_type, str):
            return None
        reader = _READERS.get((event_type, version.split(".", 1)[0]))
        if reader is None:
            return None
        _model, decoder = reader
        try:
            event = decoder.decode(raw)
        except msgspec.ValidationError:
            return None
    if strict and event.version != event.VERSION:
        return None
    amount = event.data.amount
    if not amount_ok(amount.value, amount.currency):
        return None
    check = _CANONICAL_CHECKS.get(event.eventType)
    if check is not None and not check(event):
        return None
    if times_out_of_range(event) or not _raw_ok(raw):
        return None
    return DecodedEvent(event)


def _fast_legacy(raw: bytes) -> DecodedEvent | None:
    try:
        env = _LEGACY_DECODER.decode(raw)
    except msgspec.ValidationError:
        return None
    amount = env.payload.amount
    if not amount_ok(amount.value, amount.currency):
        return None
    if not MIN_YEAR <= env.timestamp.year <= MAX_YEAR or not _raw_ok(raw):
        return None
    event, extras = legacy.normalize(env)
    return DecodedEvent(event, legacy=True, extras=extras)


# -- the precise path ----------------------------------------------------------------------------------

_UUID_RE: Final = re.compile(UUID_PATTERN)
_DATETIME_DECODER: Final = msgspec.json.Decoder(AwareDatetime)


def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or _UUID_RE.match(value) is not None


def _is_datetime(value: object) -> bool:
    """RFC 3339 with an offset, exactly what the msgspec models accept."""
    if not isinstance(value, str):
        return True
    try:
        _DATETIME_DECODER.decode(msgspec.json.encode(value))
    except msgspec.ValidationError:
        return False
    return True


@functools.cache
def format_checker() -> FormatChecker:
    """The schemas' ``uuid`` and ``date-time`` formats, checked as the msgspec models check them."""
    from jsonschema import FormatChecker

    formats = FormatChecker(formats=())
    formats.checks("uuid")(_is_uuid)
    formats.checks("date-time")(_is_datetime)
    return formats


_VALIDATORS: dict[tuple[str, str], Draft202012Validator] = {}


def _validator(event_type: str, version: str) -> Draft202012Validator:
    v = _VALIDATORS.get((event_type, version))
    if v is None:
        from jsonschema import Draft202012Validator

        v = Draft202012Validator(load_schema(event_type, version), format_checker=format_checker())
        _VALIDATORS[(event_type, version)] = v
    return v


def _show(value: Any) -> str:
    """A bad value for a message: scalars as JSON-ish text (shortened), containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | float):
        return str(value)
    if isinstance(value, OutOfRange):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "...'"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = cardguard.shown_nul(key)  # a path is text for a log or a store: never a NUL in it
    return f"{path}.{key}" if path else key


def _at(path: str) -> str:
    return path or "$"


_PATTERN_HINTS: Final = {
    UUID_PATTERN: "is not a UUID",
    r"^[A-Z]{3}$": "is not an ISO 4217 code",
    r"^[0-9]{4}$": "is not exactly four digits",
    r"^\d+\.\d+\.\d+$": r"does not match ^\d+\.\d+\.\d+$ (MAJOR.MINOR.PATCH)",
}
_TYPE_NAMES: Final = {"string": "a string", "number": "a number", "object": "an object", "integer": "an integer"}


def _schema_errors(err: SchemaError) -> list[FieldError]:
    path = ""
    for key in err.absolute_path:
        path = _join(path, key)
    inst = err.instance
    rule = str(err.validator)
    v = err.validator_value
    if rule == "required":
        present = inst if isinstance(inst, dict) else {}
        return [
            FieldError(_join(path, name), "required", f"{_join(path, name)}: required property is missing")
            for name in v
            if name not in present
        ]
    if rule == "type":
        if inst is None:
            msg = f"{_at(path)}: null is not allowed (leave the field out when it has no value)"
        else:
            want = _TYPE_NAMES.get(v, v) if isinstance(v, str) else " or ".join(v)
            msg = f"{_at(path)}: {_show(inst)} is not {want}"
    elif rule == "const":
        msg = f"{_at(path)}: {_show(inst)} is not {_show(v)}"
    elif rule == "enum":
        msg = f"{_at(path)}: {_show(inst)} is not one of {', '.join(map(str, v))}"
    elif rule == "pattern":
        msg = f"{_at(path)}: {_show(inst)} {_PATTERN_HINTS.get(v, f'does not match {v}')}"
    elif rule == "format":
        what = {"uuid": "a UUID", "date-time": "an RFC 3339 date-time with offset (e.g. 2025-12-11T10:30:00Z)"}
        msg = f"{_at(path)}: {_show(inst)} is not {what.get(v, v)}"
    elif rule == "minLength":
        msg = f"{_at(path)}: must not be empty"
    elif rule == "maxLength":
        msg = f"{_at(path)}: {len(inst) if isinstance(inst, str) else '?'} characters; at most {v}"
    elif rule == "exclusiveMinimum":
        msg = f"{_at(path)}: {_show(inst)} must be greater than {v}"
    else:
        msg = f"{_at(path)}: {err.message}"
    return [FieldError(path, rule, msg)]


def _money_errors(amount: Any, path: str) -> list[FieldError]:
    if not isinstance(amount, dict):
        return []
    value, code = amount.get("value"), amount.get("currency")
    if not isinstance(code, str):
        return []
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        if code in MINOR_UNITS:
            return []
        value = Decimal(1)  # the schema reports the value; still name a bad currency
    problem = amount_problem(Decimal(value), code)
    if problem is None:
        return []
    rule, tail = problem
    where = _join(path, "currency" if rule == "iso4217" else "value")
    return [FieldError(where, rule, f"{where}: {tail}")]


def _model_fields(model: type) -> Any:
    return msgspec.inspect.type_info(model)


def _unknown_fields(obj: Any, info: Any, path: str) -> list[FieldError]:
    """Emit strictness: every key of ``obj`` must be a field of the model (recursively)."""
    if not isinstance(info, msgspec.inspect.StructType) or not isinstance(obj, Mapping):
        return []
    fields = {f.encode_name: f.type for f in info.fields}
    out = []
    for key, value in obj.items():
        sub = _join(path, str(key))
        if key not in fields:
            out.append(FieldError(sub, "unknown-field", f"{sub}: unknown field (not in the published schema)"))
        else:
            out.extend(_unknown_fields(value, fields[key], sub))
    return out


def _pick(obj: dict[str, Any], strict: bool) -> tuple[str, str] | FieldError:
    """The (eventType, schema version) to validate ``obj`` against, or the error that prevents it."""
    event_type = obj.get("eventType")
    if event_type == legacy.LEGACY_EVENT_TYPE:
        if strict:
            return FieldError(
                "eventType", "legacy", "eventType: the legacy PAYMENT_PROCESSED envelope is never emitted"
            )
        return event_type, legacy.LEGACY_VERSION
    if event_type is None:
        return FieldError("eventType", "required", "eventType: required property is missing")
    if not isinstance(event_type, str) or event_type not in _KNOWN_TYPES:
        known = ", ".join([*_KNOWN_TYPES, f"{legacy.LEGACY_EVENT_TYPE} (legacy)"])
        return FieldError(
            "eventType", "known-type", f"eventType: {_show(event_type)} is not a known event type ({known})"
        )
    published = sorted((v for t, v in EVENT_MODELS if t == event_type), key=lambda v: tuple(map(int, v.split("."))))
    version = obj.get("version")
    if isinstance(version, str) and _SEMVER.match(version):
        if strict and version not in published:
            return FieldError(
                "version",
                "published",
                f"version: {_show(version)} is not a published version of {event_type} ({', '.join(published)})",
            )
        same_major = [v for v in published if _major(v) == _major(version)]
        if not same_major:
            return FieldError(
                "version",
                "supported",
                f"version: {_show(version)} is not a supported version of {event_type} "
                f"(readable: {', '.join(sorted({_major(v) + '.x.y' for v in published}))})",
            )
        return event_type, same_major[-1]
    return event_type, published[-1]  # the schema names the bad version


def _precise(raw: bytes, strict: bool) -> DecodedEvent:
    """Every error with path, rule and (never for card data) value; the DecodedEvent when there is none."""
    problem = limit_problem(raw)
    if problem is not None:
        raise EventValidationError([problem])
    try:
        obj = json.loads(raw, parse_float=json_number, parse_int=json_integer)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise EventValidationError([FieldError("", "json", f"$: not valid JSON ({reason}{where})")]) from None
    errors: list[FieldError] = []
    card = list(dict.fromkeys(cardguard.card_paths(obj)))
    errors += [FieldError(p, "card-number", f"{_at(p)}: {cardguard.CARD_MESSAGE}") for p in card]
    errors += [FieldError(p, "nul", f"{_at(p)}: {cardguard.NUL_MESSAGE}") for p in nul_paths(obj)]
    if not isinstance(obj, dict):
        errors.append(FieldError("", "type", f"$: {_show(obj)} is not an object (an event is a JSON object)"))
        raise EventValidationError(_finish(errors, card))

    picked = _pick(obj, strict)
    if isinstance(picked, FieldError):
        errors.append(picked)
        raise EventValidationError(_finish(errors, card))
    event_type, version = picked
    is_legacy = event_type == legacy.LEGACY_EVENT_TYPE
    body = obj.get("payload" if is_legacy else "data")
    if isinstance(body, dict):
        errors += _money_errors(body.get("amount"), "payload.amount" if is_legacy else "data.amount")
    if strict:
        model = EVENT_MODELS[(event_type, version)]
        errors += _unknown_fields(obj, _model_fields(model), "")
    for err in sorted(_validator(event_type, version).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        errors += _schema_errors(err)
    if errors:
        raise EventValidationError(_finish(errors, card))

    # valid by the schema and our rules: decode with the model (the schema and the model agree; a test checks it)
    try:
        if is_legacy:
            envelope = _LEGACY_DECODER.decode(raw)
            if not MIN_YEAR <= envelope.timestamp.year <= MAX_YEAR:
                raise EventValidationError(_finish(_time_errors(["timestamp"], obj), card))
            event, extras = legacy.normalize(envelope)
            return DecodedEvent(event, legacy=True, extras=extras)
        _, decoder = _READERS[(event_type, _major(version))]
        event = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise EventValidationError(_finish([_from_msgspec(exc)], card)) from None
    late = times_out_of_range(event)
    if late:
        raise EventValidationError(_finish(_time_errors(late, obj), card))
    return DecodedEvent(event)


def _from_msgspec(exc: msgspec.ValidationError) -> FieldError:
    text = str(exc)
    path = ""
    if " - at `$" in text:
        text, _, where = text.partition(" - at `$")
        path = where.rstrip("`").lstrip(".")
    return FieldError(path, "model", f"{_at(path)}: {text}")


def _finish(errors: list[FieldError], card_paths: list[str]) -> list[FieldError]:
    """One error per (path, rule) in order; nothing that could echo card digits."""
    seen: set[tuple[str, str]] = set()
    seen_paths: set[str] = set()
    out = []
    for e in errors:
        if (e.path, e.rule) in seen:
            continue
        if e.rule != "card-number" and (
            e.path in card_paths or any(e.path.startswith(p + ".") for p in card_paths if p)
        ):
            continue  # the card error names this path; the value must not be echoed
        if e.rule != "required" and e.path in seen_paths and e.rule in {"pattern", "exclusiveMinimum", "type"}:
            continue  # our own money rule already named this path
        if cardguard.contains_card_number(e.message):
            e = FieldError(e.path, e.rule, f"{_at(e.path)}: invalid ({e.rule}); value not shown")
        seen.add((e.path, e.rule))
        seen_paths.add(e.path)
        out.append(e)
    return out


# -- the public functions ----------------------------------------------------------------------------------


def decode_event(raw: bytes) -> DecodedEvent:
    """Decode and validate one event (canonical or legacy); EventValidationError lists every problem."""
    if not isinstance(raw, bytes):
        raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)  # str, bytearray, memoryview
    _check_limits(raw)
    decoded = _fast(raw, False)
    if decoded is not None:
        return decoded
    return _precise(raw, False)


def encode_event(event: PaymentEvent | Mapping[str, Any]) -> bytes:
    """Validate strictly and encode an event we emit: published version, canonical fields, no unknown fields."""
    if isinstance(event, Mapping):
        try:
            raw = _ENCODER.encode(event)
        except (TypeError, msgspec.EncodeError) as exc:
            raise EventValidationError([FieldError("", "type", f"$: cannot be encoded as JSON ({exc})")]) from None
        _precise(raw, True)
        return raw
    if type(event) not in _MODELS:
        raise EventValidationError([FieldError("", "type", f"$: {type(event).__name__} is not an event model")])
    raw = _ENCODER.encode(event)
    if _fast(raw, True) is None:
        _precise(raw, True)
    return raw


def validate_document(doc: bytes | str | Mapping[str, Any]) -> list[FieldError]:
    """Every problem of one document (bytes, text or a parsed object); [] when it is a valid event (read rules)."""
    if isinstance(doc, Mapping):
        try:
            doc = _ENCODER.encode(doc)
        except (TypeError, msgspec.EncodeError) as exc:
            return [FieldError("", "type", f"$: cannot be encoded as JSON ({exc})")]
    try:
        decode_event(doc if isinstance(doc, bytes) else doc.encode("utf-8"))
    except EventValidationError as exc:
        return exc.errors
    return []


def to_builtins(event: PaymentEvent) -> dict[str, Any]:
    """The event as plain dicts/strings (JSON field names, UNSET omitted, datetimes RFC 3339); amounts stay Decimal."""
    out = msgspec.to_builtins(event, builtin_types=(Decimal,))
    assert isinstance(out, dict)
    return out


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "DecodedEvent",
    "EventValidationError",
    "FieldError",
    "decode_event",
    "encode_event",
    "limit_problem",
    "nesting_depth",
    "to_builtins",
    "validate_document",
]
