"""One business fact, one effect: the rule the consumer runtime applies for every service.

A *business fact* is one lifecycle step of one payment: the key ``(paymentId, eventType)`` — a payment
completes (is initiated, authorized, captured, fails) once. Events are told apart by eventId, but two
events with different eventIds may state the same fact: a retry from another producer, the legacy and
the canonical envelope of one payment, a re-publication. The runtime keeps, per service, the first
event of each fact and the fields that define it (``business_facts``, written in the same store
transaction as the seen marks and the handler's effects), and decides before any handler runs:

* a new fact: the handler applies it;
* the same fact with the same content (:func:`same_content`): a duplicate, *absorbed* — no handler
  call, counted (``absorbed`` in the runtime's statistics, ``outcome = 'absorbed'`` in
  ``processed_events``, ``absorbed`` on the fact row);
* the same fact with other content: a *conflict*, dead-lettered with a reason that names the event
  that stated the fact first (``outcome = 'rejected'``).

Every service therefore takes the same decision for the same events, and a new service gets the rule
without writing a line. The content of a fact is the fields that define it (:data:`FACT_FIELDS`):
the amount and currency always, and per event type the fields that say what happened (failure code,
authorization code, capture id). The identifying fields the legacy envelope lacks (customerId,
invoiceId, transactionId, orderId) are compared only when both events carry them, so the legacy and
the canonical envelope of one payment are one fact; a field learned from a later duplicate is added to
the fact (never replacing one it had), so a third event must agree with both.

Rejected events (poison from a handler, a conflict, a handler that kept failing) are remembered in
``processed_events`` with ``outcome = 'rejected'`` and the reason, in the same transaction that writes
their dead letter's batch: a redelivery (a crash between the store commit and the offset commit, a
re-sent record) is skipped, never re-evaluated against later state. A record re-published from the
dead-letter channel on purpose (header ``dlq.replayedFrom``, :func:`payevents.runtime.deadletter.replay`)
is evaluated again: the operator fixed the cause.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.contracts.codec import DecodedEvent
from payevents.runtime.deadletter import H_REPLAYED_FROM
from payevents.store.db import Migration
from payevents.store.sql import mark as sql_mark

#: outcomes in ``processed_events``
APPLIED: Final = "applied"
IGNORED: Final = "ignored"
ABSORBED: Final = "absorbed"
REJECTED: Final = "rejected"


@dataclasses.dataclass(frozen=True)
class FactFields:
    """The data fields (dotted paths) that define one event type's fact.

    ``always``: compared always (absent counts as a value). ``when_both``: compared only when both events
    carry the field (the legacy envelope lacks them)."""

    always: tuple[str, ...]
    when_both: tuple[str, ...] = ()


_MONEY: Final = ("amount.value", "amount.currency")

#: eventType -> what defines its fact; an event type not listed (a future one) uses :data:`DEFAULT_FIELDS`
FACT_FIELDS: Final[Mapping[str, FactFields]] = {
    "PaymentInitiated": FactFields(_MONEY, ("customerId", "invoiceId", "metadata.orderId")),
    "PaymentAuthorized": FactFields((*_MONEY, "authorizationCode"), ("customerId",)),
    "PaymentCaptured": FactFields((*_MONEY, "captureId"), ("customerId",)),
    "PaymentProcessed": FactFields(_MONEY, ("customerId", "invoiceId", "transactionId", "metadata.orderId")),
    "PaymentFailed": FactFields((*_MONEY, "failureCode", "failedStage"), ("customerId",)),
}
#: a future event type: its amount, if it has one
DEFAULT_FIELDS: Final = FactFields((), _MONEY)

RUNTIME_FACT_MIGRATION: Final = Migration(
    2,
    "business facts; reasons of rejected events",
    both=[
        "CREATE TABLE IF NOT EXISTS business_facts ("
        " service VARCHAR(64) NOT NULL,"
        " payment_id VARCHAR(255) NOT NULL,"
        " event_type VARCHAR(64) NOT NULL,"
        " event_id VARCHAR(128) NOT NULL,"
        " content TEXT NOT NULL,"
        " absorbed BIGINT NOT NULL DEFAULT 0,"
        " created_at VARCHAR(40) NOT NULL,"
        " PRIMARY KEY (service, payment_id, event_type))",
        "ALTER TABLE processed_events ADD COLUMN reason TEXT",
    ],
)


def _leaf(node: Any) -> Any:
    """A defining field's value as stored and compared: amounts normalized (10, 10.0 and 10.00 are one amount)."""
    if isinstance(node, Decimal):
        return format(node.normalize(), "f")
    if isinstance(node, str | int | bool):
        return node
    return str(node)


def _value(data: Any, path: str) -> Any:
    """The value of a dotted path (None when a step is unset or null), as :func:`_leaf` gives it."""
    node = data
    for part in path.split("."):
        node = getattr(node, part, msgspec.UNSET)
        if node is msgspec.UNSET or node is None:
            return None
    return _leaf(node)


def _compile_content(rule: FactFields) -> Callable[[Any], dict[str, Any]]:
    """:func:`content_of` for one rule as one generated function: the same walk as :func:`_value` per path,
    written out (direct attribute reads, no per-path loop), run once per event on the consume path."""
    lines = ["def content(data):", "    out = {}"]
    for i, path in enumerate((*rule.always, *rule.when_both)):
        names = path.split(".")
        if not all(n.isidentifier() for n in names):
            raise ValueError(f"FACT_FIELDS: {path!r} is not a dotted attribute path")
        lines.append("    n = data")
        indent = "    "
        for name in names:
            lines.append(f"{indent}n = getattr(n, {name!r}, UNSET)")
            lines.append(f"{indent}if n is not UNSET and n is not None:")
            indent += "    "
        leaf = "n if type(n) is str else leaf(n)"
        lines.append(f"{indent}out[{path!r}] = {leaf}")
        if i < len(rule.always):  # compared always: absent counts as a value (None)
            lines.append(f"    if {path!r} not in out:")
            lines.append(f"        out[{path!r}] = None")
    lines.append("    return out")
    namespace: dict[str, Any] = {"UNSET": msgspec.UNSET, "leaf": _leaf}
    exec("\n".join(lines), namespace)  # built from our constants only (FACT_FIELDS)
    fn: Callable[[Any], dict[str, Any]] = namespace["content"]
    return fn


_CONTENT: Final[dict[str, Callable[[Any], dict[str, Any]]]] = {t: _compile_content(r) for t, r in FACT_FIELDS.items()}
_DEFAULT_CONTENT: Final = _compile_content(DEFAULT_FIELDS)


def fact_key(decoded: DecodedEvent) -> tuple[str, str] | None:
    """``(paymentId, eventType)`` of the event, or None when it names no payment."""
    event = decoded.event
    payment_id = getattr(event.data, "paymentId", None)
    return (payment_id, event.eventType) if isinstance(payment_id, str) else None


def content_of(decoded: DecodedEvent) -> dict[str, Any]:
    """The fields that define the event's fact (absent ``when_both`` fields left out; an absent ``always``
    field is None). One generated function per event type (:func:`_compile_content`); the reference is
    :func:`reference_content_of`, and a test holds the two equal."""
    event = decoded.event
    return _CONTENT.get(event.eventType, _DEFAULT_CONTENT)(event.data)


def reference_content_of(decoded: DecodedEvent) -> dict[str, Any]:
    """:func:`content_of` written plainly (one :func:`_value` per path): the definition the generated one keeps."""
    rule = FACT_FIELDS.get(decoded.event_type, DEFAULT_FIELDS)
    data = decoded.event.data
    out: dict[str, Any] = {path: _value(data, path) for path in rule.always}
    for path in rule.when_both:
        value = _value(data, path)
        if value is not None:
            out[path] = value
    return out


def differences(event_type: str, first: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """The defining fields on which ``other`` disagrees with ``first`` (empty: the same content).

    A field compared always is in every content :func:`content_of` builds (None when absent); a fact
    recovered from a service's history (:func:`backfill`) may not know it, and then it is not compared."""
    rule = FACT_FIELDS.get(event_type, DEFAULT_FIELDS)
    return [p for p in (*rule.always, *rule.when_both) if p in first and p in other and first[p] != other[p]]


def same_content(event_type: str, first: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    return not differences(event_type, first, other)


def conflict_reason(event_type: str, payment_id: str, first_event_id: str, first: Mapping[str, Any],
                    other: Mapping[str, Any]) -> str:
    diff = differences(event_type, first, other)
    detail = "; ".join(f"{p}: {first.get(p)!r} then {other.get(p)!r}" for p in diff)
    return (f"conflict: {event_type} of payment {payment_id} was already stated by event {first_event_id}"
            f" with other content ({detail})")


def content_from(amount: Decimal, currency: str, **fields: Any) -> dict[str, Any]:
    """A fact's content from stored values (a service's history): the amount and the known fields."""
    out: dict[str, Any] = {"amount.value": format(amount.normalize(), "f"), "amount.currency": currency}
    out.update((k, v) for k, v in fields.items() if v is not None)
    return out


def replayed_on_purpose(headers: Iterable[tuple[str, bytes]]) -> bool:
    """True for a record re-published from the dead-letter channel (``payevents dlq replay``)."""
    return any(k == H_REPLAYED_FROM for k, _v in headers)


_ENCODER = msgspec.json.Encoder(order="sorted")


def encode_content(content: Mapping[str, Any]) -> str:
    """Compact JSON, keys sorted (what ``json.dumps(sort_keys=True, separators=(",", ":"))`` wrote, in C)."""
    return _ENCODER.encode(dict(content)).decode()


def decode_content(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


# -- reads ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a service decided about one eventId: applied, ignored, absorbed (a duplicate fact) or rejected."""

    event_id: str
    event_type: str
    outcome: str
    reason: str | None


@dataclasses.dataclass(frozen=True)
class Fact:
    payment_id: str
    event_type: str
    event_id: str
    content: dict[str, Any]
    absorbed: int


def decisions(engine: Engine, service: str, event_ids: Sequence[str] | None = None) -> dict[str, Decision]:
    """The service's decision per eventId (all, or those of ``event_ids``)."""
    sql = "SELECT event_id, event_type, outcome, reason FROM processed_events WHERE service = :s"
    params: dict[str, Any] = {"s": service}
    stmt = sa.text(sql)
    if event_ids is not None:
        stmt = sa.text(sql + " AND event_id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
        params["ids"] = list(event_ids)
        if not event_ids:
            return {}
    with engine.connect() as conn:
        return {r[0]: Decision(r[0], r[1], r[2], r[3]) for r in conn.execute(stmt, params)}


def facts(engine: Engine, service: str, payment_id: str) -> list[Fact]:
    """The facts the service holds for one payment (first eventId, defining content, duplicates absorbed)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT payment_id, event_type, event_id, content, absorbed FROM business_facts"
            " WHERE service = :s AND payment_id = :p ORDER BY created_at, event_type"), {"s": service, "p": payment_id})
        return [Fact(r[0], r[1], r[2], decode_content(r[3]), int(r[4])) for r in rows]


# -- inside the batch transaction -----------------------------------------------------------------------


def load(conn: Connection, service: str, payment_ids: Sequence[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """``(paymentId, eventType) -> (first eventId, content JSON)`` of the facts of ``payment_ids``."""
    from payevents.runtime import bulk

    # one primary-key range probe per paymentId on PostgreSQL, IN lists on SQLite (runtime.bulk)
    rows = bulk.lookup(conn, "payment_id, event_type, event_id, content", "business_facts",
                       f"service = {sql_mark(conn)}", "payment_id", payment_ids, (service,), unique=False)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


#: a new fact's row, in the order :func:`insert` takes it
FACT_COLUMNS: Final = ("service", "payment_id", "event_type", "event_id", "content", "absorbed", "created_at")


def insert(conn: Connection, rows: Sequence[tuple[str, str, str, str, str, int, str]]) -> None:
    """New facts: (service, payment_id, event_type, event_id, content JSON, absorbed, created_at)."""
    from payevents.runtime import bulk

    # one COPY on PostgreSQL (a fact inserted meanwhile by another member fails the batch: retried)
    bulk.copy_rows(conn, "business_facts", FACT_COLUMNS, rows)


#: what a service's history tells about the facts it applied before the rule existed:
#: (paymentId, eventType, first eventId, content), oldest first per fact
HistoryRow = tuple[str, str, str, dict[str, Any]]


def backfill(conn: Connection, service: str, history: Iterable[HistoryRow]) -> int:
    """Record the facts of ``history`` not recorded yet (the first row of each fact wins); returns how many.

    Run once per service database after its migrations: a database that applied events before the rule
    existed gets the same decisions for their repeats as a new one."""
    known: set[tuple[str, str]] = set()
    firsts: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for payment_id, event_type, event_id, content in history:
        firsts.setdefault((payment_id, event_type), (event_id, content))
    keys = list(firsts)
    for i in range(0, len(keys), 500):
        known.update(load(conn, service, [k[0] for k in keys[i : i + 500]]))
    now = datetime.now(UTC).isoformat()
    rows = [(service, k[0], k[1], eid, encode_content(c), 0, now) for k, (eid, c) in firsts.items() if k not in known]
    insert(conn, rows)
    return len(rows)


def absorb(conn: Connection, rows: Sequence[tuple[int, str, str, str, str]]) -> None:
    """Count absorbed duplicates and keep what they taught: (n, content JSON, service, payment_id, event_type)."""
    if rows:
        mark = sql_mark(conn)
        conn.exec_driver_sql(
            f"UPDATE business_facts SET absorbed = absorbed + {mark}, content = {mark}"
            f" WHERE service = {mark} AND payment_id = {mark} AND event_type = {mark}", list(rows))
