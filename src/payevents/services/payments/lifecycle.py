"""Payment commands: create, authorize, capture, complete, fail — and the whole lifecycle, one or many.

Every command runs in one transaction of the payments database: it claims its idempotency key,
checks the transition, talks to the gateway, records the payment and appends the event to the
outbox. A retried command (same key, same arguments) returns the first result and emits nothing;
the same key with other arguments is an :class:`IdempotencyConflict`; an illegal transition raises
:class:`IllegalTransition` and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts import channel, ids
from payevents.contracts.cardguard import check_free_text, safe_repr
from payevents.contracts.events import FAILURE_CODES, MAX_CODE_LENGTH, MAX_ID_LENGTH
from payevents.contracts.money import from_minor, parse_minor
from payevents.errors import ContractError, IdempotencyConflict, NotFound
from payevents.runtime import outbox, tracing
from payevents.services.payments import events as ev
from payevents.services.payments import machine, store
from payevents.services.payments.gateway import Gateway, SimulatedGateway
from payevents.services.payments.models import EventRef, Payment, PaymentSpec, PaymentState
from payevents.settings import Settings
from payevents.store.paging import after_clause

_ENCODER: Final = msgspec.json.Encoder(decimal_format="string")
_DECODER: Final = msgspec.json.Decoder(Payment)
_DEFAULT_GATEWAY: Final = SimulatedGateway()

_CLAIM: Final = sa.text(
    "INSERT INTO payment_commands (idempotency_key, command, fingerprint, command_id, payment_id, result, created_at)"
    " VALUES (:k, :c, :f, :cid, NULL, NULL, :t) ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key"
)
_FINISH: Final = sa.text("UPDATE payment_commands SET payment_id = :pid, result = :r WHERE idempotency_key = :k")
_GET_COMMAND: Final = sa.text(
    "SELECT idempotency_key, command, fingerprint, payment_id, result FROM payment_commands WHERE idempotency_key = :k"
)


def _now() -> datetime:
    return datetime.now(UTC)


_new_id: Final = machine.new_id


def _fingerprint(command: str, params: dict[str, Any]) -> str:
    doc = {"command": command, **{k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}}
    return hashlib.sha256(msgspec.json.encode(doc, order="sorted")).hexdigest()


def _key(key: str | None) -> str:
    if key is None:  # a generated key is an index key (the commands' and the outbox's): time-ordered
        return ids.uuid7()
    if not isinstance(key, str) or not key.strip():
        raise ContractError("idempotency_key: must be a non-empty string")
    check_free_text("idempotency_key", key, 200)  # stored with the outbox row, sent as the idempotencyKey header
    return key


def _text(value: Any, field: str, *, max_len: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ContractError(f"{field}: required non-empty string")
    check_free_text(field, value, max_len)  # the column's width; no NUL or card number in the store, an event or a log
    return value


def _opt_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _replace(p: Payment, **changes: Any) -> Payment:
    return msgspec.structs.replace(p, **changes)


def _run(
    settings: Settings,
    command: str,
    key: str | None,
    params: dict[str, Any],
    body: Callable[[Connection, str, str, datetime], Payment],
) -> Payment:
    """Claim the key, run ``body`` and store its result — all in one transaction."""
    key = _key(key)
    fingerprint = _fingerprint(command, params)
    command_id = ids.uuid4()
    now = _now()
    with tracing.command_span(command, params.get("payment_id")), store.writer_engine(settings).begin() as conn:
        claimed = conn.execute(
            _CLAIM, {"k": key, "c": command, "f": fingerprint, "cid": command_id, "t": now.isoformat()}
        ).first()
        if claimed is None:
            row = conn.execute(_GET_COMMAND, {"k": key}).one()
            return _replay(row, command, fingerprint)
        payment = body(conn, command_id, key, now)
        conn.execute(_FINISH, {"pid": payment.payment_id, "r": _ENCODER.encode(payment).decode(), "k": key})
        return payment


def _replay(row: Any, command: str, fingerprint: str) -> Payment:
    if row.command != command or row.fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"idempotency_key {row.idempotency_key!r}: already used for a {row.command} command with other"
            f" arguments (payment {row.payment_id}); use a new key for a different command"
        )
    return _DECODER.decode(row.result)


def _emit(conn: Connection, settings: Settings, p: Payment, event: Any, command_id: str, key: str) -> None:
    headers = ev.headers(p, command_id=command_id, idempotency_key=key, env=settings.env)
    outbox.append(conn, event, headers=headers, idempotency_key=key, env=settings.env)


def _load_for(conn: Connection, payment_id: str, command: str) -> Payment:
    p = store.load(conn, payment_id, for_update=True)
    if p is None:
        raise NotFound(f"payment {safe_repr(payment_id)}: not found")
    machine.check(p, command)
    return p


def _update(conn: Connection, p: Payment, now: datetime) -> None:
    conn.execute(store.UPDATE_PAYMENT, store.to_row(p, now))


def _with_events(p: Payment) -> Payment:
    return _replace(p, events=ev.event_refs(p))


# -- the commands ----------------------------------------------------------------------------------------


def _new_payment(
    *,
    customer_id: str,
    amount: Decimal | str | int,
    currency: str,
    description: str,
    method_type: str,
    last4: str,
    invoice_id: str | None,
    order_id: str | None,
    merchant_id: str | None,
    correlation_id: str | None,
    payment_id: str | None,
    now: datetime,
    field_prefix: str = "",
) -> Payment:
    f = field_prefix
    if not isinstance(currency, str):
        raise ContractError(f"{f}currency: {safe_repr(currency)} is not an ISO 4217 code")
    minor = parse_minor(amount, currency, field=f"{f}amount")
    if not isinstance(last4, str) or len(last4) != 4 or not last4.isdigit():
        # never echo the value: a full card number sent here must not reach an error, a response or a log
        raise ContractError(f"{f}last4: must be exactly 4 digits (never a card number)")
    return Payment(
        payment_id=_text(payment_id, f"{f}payment_id") if payment_id is not None else _new_id("pay"),
        state=PaymentState.initiated.value,
        customer_id=_text(customer_id, f"{f}customer_id"),
        amount=from_minor(minor, currency),
        amount_minor=minor,
        currency=currency,
        method_type=_text(method_type, f"{f}method_type", max_len=MAX_CODE_LENGTH),
        last4=last4,
        description=_text(description, f"{f}description", max_len=1000),
        correlation_id=_opt_text(correlation_id, f"{f}correlation_id") or ids.uuid4(),
        invoice_id=_opt_text(invoice_id, f"{f}invoice_id"),
        order_id=_opt_text(order_id, f"{f}order_id"),
        merchant_id=_opt_text(merchant_id, f"{f}merchant_id"),
        created_at=now,
    )


def create(
    settings: Settings,
    *,
    customer_id: str,
    amount: Decimal | str | int,
    currency: str,
    description: str,
    method_type: str = "credit_card",
    last4: str = "4242",
    invoice_id: str | None = None,
    order_id: str | None = None,
    merchant_id: str | None = None,
    correlation_id: str | None = None,
    payment_id: str | None = None,
    idempotency_key: str | None = None,
) -> Payment:
    """Initiate a payment (state ``initiated``) and emit PaymentInitiated."""
    params: dict[str, Any] = dict(
        customer_id=customer_id, amount=str(amount), currency=currency, description=description,
        method_type=method_type, last4=last4, invoice_id=invoice_id, order_id=order_id,
        merchant_id=merchant_id, correlation_id=correlation_id, payment_id=payment_id)  # fmt: skip
    _new_payment(**{**params, "amount": amount}, now=_now())  # validate before touching the store

    def body(conn: Connection, command_id: str, key: str, now: datetime) -> Payment:
        p = _new_payment(**{**params, "amount": amount}, now=now)
        if store.load(conn, p.payment_id) is not None:
            raise IdempotencyConflict(f"payment_id {safe_repr(p.payment_id)}: a payment with this id already exists")
        conn.execute(store.INSERT_PAYMENT, store.to_row(p, now))
        _emit(conn, settings, p, ev.initiated(p, now), command_id, key)
        return _with_events(p)

    return _run(settings, "create", idempotency_key, params, body)


def authorize(
    settings: Settings,
    payment_id: str,
    *,
    idempotency_key: str | None = None,
    gateway: Gateway | None = None,
    decline: str | None = None,
) -> Payment:
    """Ask the gateway to authorize: ``authorized`` + PaymentAuthorized, or on a decline ``failed`` +
    PaymentFailed (failedStage ``initiated``). ``decline`` asks the simulated gateway to decline."""
    gw = gateway or _DEFAULT_GATEWAY

    def body(conn: Connection, command_id: str, key: str, now: datetime) -> Payment:
        p, event = machine.authorize(_load_for(conn, payment_id, "authorize"), gw, now, decline=decline)
        _update(conn, p, now)
        _emit(conn, settings, p, event, command_id, key)
        return _with_events(p)

    return _run(settings, "authorize", idempotency_key, {"payment_id": payment_id, "decline": decline}, body)


def capture(
    settings: Settings, payment_id: str, *, idempotency_key: str | None = None, gateway: Gateway | None = None
) -> Payment:
    """Capture the authorized amount: ``captured`` + PaymentCaptured, or ``failed`` + PaymentFailed."""
    gw = gateway or _DEFAULT_GATEWAY

    def body(conn: Connection, command_id: str, key: str, now: datetime) -> Payment:
        p, event = machine.capture(_load_for(conn, payment_id, "capture"), gw, now)
        _update(conn, p, now)
        _emit(conn, settings, p, event, command_id, key)
        return _with_events(p)

    return _run(settings, "capture", idempotency_key, {"payment_id": payment_id}, body)


def complete(settings: Settings, payment_id: str, *, idempotency_key: str | None = None) -> Payment:
    """Record the transaction (transactionId, processedAt) of a captured payment and emit PaymentProcessed."""

    def body(conn: Connection, command_id: str, key: str, now: datetime) -> Payment:
        p, event = machine.complete(_load_for(conn, payment_id, "complete"), now)
        _update(conn, p, now)
        _emit(conn, settings, p, event, command_id, key)
        return _with_events(p)

    return _run(settings, "complete", idempotency_key, {"payment_id": payment_id}, body)


def fail(
    settings: Settings, payment_id: str, *, code: str, reason: str, idempotency_key: str | None = None
) -> Payment:
    """Fail an open payment with a reason code (e.g. ``cancelled``) and emit PaymentFailed."""
    if code not in FAILURE_CODES:
        raise ContractError(f"code: {safe_repr(code)} is not a failure code (one of {', '.join(FAILURE_CODES)})")
    _text(reason, "reason", max_len=1000)

    def body(conn: Connection, command_id: str, key: str, now: datetime) -> Payment:
        p, event = machine.fail(_load_for(conn, payment_id, "fail"), code, reason, now)
        _update(conn, p, now)
        _emit(conn, settings, p, event, command_id, key)
        return _with_events(p)

    return _run(settings, "fail", idempotency_key, {"payment_id": payment_id, "code": code, "reason": reason}, body)


# -- reads -----------------------------------------------------------------------------------------------


def show(settings: Settings, payment_id: str) -> Payment:
    """One payment with the events it emitted; NotFound if there is none."""
    with store.engine(settings).connect() as conn:
        p = store.load(conn, payment_id)
    if p is None:
        raise NotFound(f"payment {safe_repr(payment_id)}: not found")
    return p


def list_payments(
    settings: Settings, *, state: str | None = None, customer_id: str | None = None, limit: int = 100,
    starting_after: str | None = None,
) -> list[Payment]:
    """The most recent payments, newest first, optionally by state and customer; ``starting_after``: those
    after that payment id in this order (keyset paging)."""
    if state is not None and state not in PaymentState.__members__:
        raise ContractError(f"state: {safe_repr(state)} is not one of {', '.join(PaymentState.__members__)}")
    where, args = [], {"lim": int(limit)}
    if state is not None:
        where.append("state = :state")
        args["state"] = state  # type: ignore[assignment]
    if customer_id is not None:
        where.append("customer_id = :cid")
        args["cid"] = customer_id  # type: ignore[assignment]
    with store.engine(settings).connect() as conn:
        if starting_after is not None:
            clause, more = after_clause(conn, "payments", "created_at", "payment_id", descending=True,
                                        starting_after=starting_after)
            where.append(clause)
            args.update(more)
        sql = "SELECT * FROM payments" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, payment_id LIMIT :lim"
        return [store.from_row(r) for r in conn.execute(sa.text(sql), args)]


class TimelineEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One stored event of a payment with its audit headers and publish status."""

    seq: int
    event_id: str
    event_type: str
    version: str
    created_at: float
    headers: dict[str, str]
    published: bool
    publish_delay_s: float | None = None
    partition: int | None = None
    offset: int | None = None


def timeline(settings: Settings, payment_id: str) -> list[TimelineEvent]:
    """A payment's events as stored in the outbox, in order, with their audit trail."""
    rows = outbox.events_for_payment(store.engine(settings), payment_id)
    return [
        TimelineEvent(seq=r.seq, event_id=r.event_id, event_type=r.event_type, version=r.version,
                      created_at=r.created_at, headers=r.headers, published=r.published, publish_delay_s=r.delay_s,
                      partition=r.partition, offset=r.offset)
        for r in rows
    ]


# -- the whole lifecycle -----------------------------------------------------------------------------------

CHUNK: Final = 500


def process_payment(settings: Settings, spec: PaymentSpec, *, gateway: Gateway | None = None) -> Payment:
    """Create, authorize, capture and complete one payment in one transaction (see :func:`process_payments`)."""
    return process_payments(settings, [spec], gateway=gateway)[0]


def process_payments(
    settings: Settings, specs: Sequence[PaymentSpec], *, gateway: Gateway | None = None, chunk: int = CHUNK
) -> list[Payment]:
    """Run many payments' whole lifecycles: one transaction per ``chunk`` payments.

    Each payment emits PaymentInitiated, PaymentAuthorized, PaymentCaptured and PaymentProcessed — or
    PaymentFailed when the gateway declines — exactly as the single-step commands do, with the spec's
    idempotency key (``{key}:initiate`` … ``{key}:complete`` on the events). A spec whose key was used
    before returns the first result and emits nothing. Results are in input order.
    """
    gw = gateway or _DEFAULT_GATEWAY
    keyed = []
    for i, spec in enumerate(specs):  # validate everything before the first write
        key = _key(spec.idempotency_key)
        fields = _spec_fields(spec)
        if spec.decline is not None and spec.decline not in FAILURE_CODES:
            raise ContractError(f"specs[{i}].decline: {safe_repr(spec.decline)} is not a failure code")
        check = {k: v for k, v in fields.items() if k != "decline"}
        p0 = _new_payment(**{**check, "amount": spec.amount}, payment_id=None, now=_now(), field_prefix=f"specs[{i}].")
        keyed.append((key, _fingerprint("process", fields), spec, p0))
    out: list[Payment] = []
    eng = store.writer_engine(settings)
    for start in range(0, len(keyed), max(1, chunk)):
        with eng.begin() as conn:
            out.extend(_process_chunk(conn, settings, keyed[start : start + chunk], gw))
    return out


def _spec_fields(spec: PaymentSpec) -> dict[str, Any]:
    return dict(customer_id=spec.customer_id, amount=str(spec.amount), currency=spec.currency,
                description=spec.description, method_type=spec.method_type, last4=spec.last4,
                invoice_id=spec.invoice_id, order_id=spec.order_id, merchant_id=spec.merchant_id,
                correlation_id=spec.correlation_id, decline=spec.decline)  # fmt: skip


def _process_chunk(
    conn: Connection, settings: Settings, items: Sequence[tuple[str, str, PaymentSpec, Payment]], gw: Gateway
) -> list[Payment]:
    existing = store.select_commands(conn, [it[0] for it in items])
    env = settings.env
    results: list[Payment] = []
    fresh: dict[str, tuple[str, Payment]] = {}
    payment_rows: list[tuple[Any, ...]] = []
    command_rows: list[tuple[Any, ...]] = []
    emitted: list[outbox.OutboxItem] = []
    for key, fingerprint, spec, p0 in items:
        if key in existing:
            results.append(_replay(existing[key], "process", fingerprint))
            continue
        if key in fresh:
            first_fp, first = fresh[key]
            if first_fp != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency_key {safe_repr(key)}: used twice in this batch with other arguments")
            results.append(first)
            continue
        command_id = ids.uuid4()
        p, events = _lifecycle(p0, spec.decline, gw)
        now = _now()
        payment_rows.append(store.to_tuple(p, now))
        command_rows.append((key, "process", fingerprint, command_id, p.payment_id, _ENCODER.encode(p).decode(),
                             now.isoformat()))  # fmt: skip
        base = ev.headers(p, command_id=command_id, idempotency_key=key, env=env)
        for step, event in events:
            event_key = f"{key}:{step}"
            emitted.append(outbox.OutboxItem(event=event, idempotency_key=event_key,
                                             headers={**base, channel.H_IDEMPOTENCY_KEY: event_key}))
        fresh[key] = (fingerprint, p)
        results.append(p)
    store.insert_payments(conn, payment_rows)
    store.insert_commands(conn, command_rows)
    outbox.append_many(conn, emitted, env=env)
    return results


def _lifecycle(p: Payment, decline: str | None, gw: Gateway) -> tuple[Payment, list[tuple[str, Any]]]:
    """One payment's whole lifecycle in memory (from its validated initial state), through the same transitions
    as the single-step commands (:mod:`~payevents.services.payments.machine`): the final payment with its event
    references, and its events in order (a decline ends it with PaymentFailed)."""
    now = _now()
    p = _replace(p, created_at=now)
    events: list[tuple[str, Any]] = [("initiate", ev.initiated(p, now))]
    steps: list[tuple[str, Callable[[Payment, datetime], machine.Step]]] = [
        ("authorize", lambda q, t: machine.authorize(q, gw, t, decline=decline)),
        ("capture", lambda q, t: machine.capture(q, gw, t, decline=decline)),
        ("complete", machine.complete),
    ]
    for name, step in steps:
        p, event = step(p, _now())
        events.append((name, event))
        if p.state == PaymentState.failed.value:
            break
    refs = [EventRef(event_type=e.eventType, event_id=e.eventId, at=e.timestamp) for _, e in events]
    return _replace(p, events=refs), events
