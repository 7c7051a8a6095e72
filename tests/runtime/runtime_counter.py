"""A tiny downstream service for the runtime tests: ``_counter``.

Its handler appends one row per applied event (no uniqueness on purpose, so that an event applied
twice shows up as two rows) and adds the amount to a running total. A description of ``reject``
makes it raise PoisonEvent; ``boom`` makes it raise an unexpected error; ``die`` ends the process (``os._exit``);
``hang`` never returns. The optional batch handler has
the same effects and also records each successful call (its size) in ``counter_batches``; a description
of ``flaky`` makes it raise a TransientError the first time it meets that event in a process.
Also the event factory and producer helpers the tests share (and the subprocess worker imports).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts import channel
from payevents.contracts.codec import DecodedEvent
from payevents.errors import PoisonEvent, TransientError
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store.db import Migration
from payevents.transport.base import Message, Record

NAME = "_counter"

MIGRATIONS = (
    Migration(
        1,
        "counter tables",
        sqlite=["CREATE TABLE counter_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id VARCHAR(64) NOT NULL,"
                " payment_id VARCHAR(64) NOT NULL, partition_no INTEGER NOT NULL, offset_no BIGINT NOT NULL,"
                " amount_minor BIGINT NOT NULL)"],
        postgresql=["CREATE TABLE counter_events (seq BIGSERIAL PRIMARY KEY, event_id VARCHAR(64) NOT NULL,"
                    " payment_id VARCHAR(64) NOT NULL, partition_no INTEGER NOT NULL, offset_no BIGINT NOT NULL,"
                    " amount_minor BIGINT NOT NULL)"],
        both=["CREATE TABLE counter_total (id INTEGER PRIMARY KEY, total_minor BIGINT NOT NULL, n BIGINT NOT NULL)",
              "INSERT INTO counter_total (id, total_minor, n) VALUES (1, 0, 0)"],
    ),
    Migration(2, "batch calls", both=["CREATE TABLE counter_batches (size INTEGER NOT NULL)"]),
)

_INSERT = sa.text("INSERT INTO counter_events (event_id, payment_id, partition_no, offset_no, amount_minor)"
                  " VALUES (:e, :p, :pa, :o, :a)")
_flaky_seen: set[str] = set()


def on_processed(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    data = decoded.event.data
    meta = getattr(data, "metadata", None)
    description = getattr(meta, "description", None)
    if description == "reject":
        raise PoisonEvent("counter: this payment cannot be counted")
    if description == "boom":
        raise RuntimeError("counter exploded")
    if description == "die":  # the worker process dies (as a segfault or an OOM kill would end it)
        os._exit(3)
    if description == "hang":  # the handler never returns (as one waiting on a connection gone silent)
        threading.Event().wait()
    minor = int(Decimal(data.amount.value) * 100)
    conn.execute(_INSERT, {"e": decoded.event_id, "p": data.paymentId, "pa": message.partition,
                           "o": message.offset, "a": minor})
    conn.execute(sa.text("UPDATE counter_total SET total_minor = total_minor + :a, n = n + 1 WHERE id = 1"),
                 {"a": minor})


def on_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    """The same effects as :func:`on_processed` over a batch: one executemany and one total update."""
    rows = []
    for decoded, message in batch:
        data = decoded.event.data
        description = getattr(getattr(data, "metadata", None), "description", None)
        if description == "reject":
            raise PoisonEvent("counter: this payment cannot be counted")
        if description == "boom":
            raise RuntimeError("counter exploded")
        if description == "flaky" and decoded.event_id not in _flaky_seen:
            _flaky_seen.add(decoded.event_id)
            raise TransientError("counter: flaky for a moment")
        rows.append({"e": decoded.event_id, "p": data.paymentId, "pa": message.partition, "o": message.offset,
                     "a": int(Decimal(data.amount.value) * 100)})
    conn.execute(_INSERT, rows)
    conn.execute(sa.text("UPDATE counter_total SET total_minor = total_minor + :a, n = n + :n WHERE id = 1"),
                 {"a": sum(r["a"] for r in rows), "n": len(rows)})
    conn.execute(sa.text("INSERT INTO counter_batches (size) VALUES (:n)"), {"n": len(rows)})


def service(name: str = NAME, *, batch: bool = False, facts: bool = False) -> ServiceDef:
    """The counter service under ``name`` (its group is ``payevents.{name}``: unique per test on Kafka),
    with the batch handler when ``batch``. It counts raw deliveries of many completions per payment, so the
    one-fact rule is off unless ``facts``."""
    return ServiceDef(name=name, description="counts payments (tests)", migrations=MIGRATIONS,
                      handlers={"PaymentProcessed": on_processed}, batch_handler=on_batch if batch else None,
                      one_effect_per_fact=facts)


#: what ``python -m payevents.runtime.runner runtime_counter:SERVICE`` runs (name from the environment)
SERVICE = service(os.environ.get("PAYEVENTS_TEST_COUNTER_NAME", NAME),
                  batch=os.environ.get("PAYEVENTS_TEST_COUNTER_BATCH") == "1")


# -- events ------------------------------------------------------------------------------------------


def event_dict(payment_id: str, amount: str = "12.34", *, description: str = "a payment",
               event_id: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "eventId": event_id or str(uuid.uuid4()),
        "eventType": "PaymentProcessed",
        "timestamp": now,
        "version": "1.0.0",
        "data": {
            "paymentId": payment_id,
            "amount": {"value": amount, "currency": "USD"},
            "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242"},
            "processedAt": now,
            "transactionId": f"txn_{uuid.uuid4().hex[:12]}",
            "customerId": "cust_1",
            "gatewayReference": f"gw_{uuid.uuid4().hex[:10]}",
            "metadata": {"description": description, "orderId": "ORD-1"},
        },
    }


def encode(ev: dict[str, Any]) -> bytes:
    """JSON with the amount as a JSON number (the wire format)."""
    text = json.dumps(ev, separators=(",", ":"))
    value = ev["data"]["amount"]["value"]
    return text.replace(f'"value":"{value}"', f'"value":{value}').encode()


def record(settings: Settings, value: bytes, key: str, event_id: str | None = None,
           event_type: str = "PaymentProcessed") -> Record:
    headers: tuple[tuple[str, bytes], ...] = ((channel.H_EVENT_TYPE, event_type.encode()),
                                              (channel.H_CONTENT_TYPE, b"application/json"))
    if event_id:
        headers += ((channel.H_EVENT_ID, event_id.encode()),)
    return Record(topic=channel.topic_for(settings.env), value=value, key=key.encode(), headers=headers)


def event_record(settings: Settings, payment_id: str, amount: str = "12.34",
                 **kw: Any) -> tuple[Record, dict[str, Any]]:
    ev = event_dict(payment_id, amount, **kw)
    return record(settings, encode(ev), payment_id, ev["eventId"]), ev


def send(settings: Settings, records: Sequence[Record]) -> None:
    from payevents.transport import open_transport

    t = open_transport(settings)
    try:
        t.create_topics([channel.topic_for(settings.env), channel.dead_letter_topic_for(settings.env)],
                        settings.partitions)
        p = t.producer()
        try:
            for i in range(0, len(records), 500):
                for attempt in range(5):  # as the relay does: a transient fault means "send them again"
                    try:
                        p.send(records[i : i + 500])
                        break
                    except TransientError:
                        if attempt == 4:
                            raise
        finally:
            p.close()
    finally:
        t.close()


def counter_rows(engine: sa.engine.Engine) -> list[tuple[int, str, str, int, int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT seq, event_id, payment_id, partition_no, offset_no, amount_minor FROM counter_events ORDER BY seq"
        ))]  # type: ignore[misc]


def batch_sizes(engine: sa.engine.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT size FROM counter_batches")).scalars())


def counter_total(engine: sa.engine.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT total_minor, n FROM counter_total WHERE id = 1")).one()
        return int(row[0]), int(row[1])


def _install_decode_shim() -> None:
    """Until the contracts' decode_event lands: a strict msgspec decode of PaymentProcessed (tests only)."""
    from payevents.contracts import codec

    if hasattr(codec, "decode_event"):
        return
    import msgspec

    from payevents.contracts.events import PaymentProcessed

    def decode_event(raw: bytes) -> DecodedEvent:
        try:
            return DecodedEvent(msgspec.json.decode(raw, type=PaymentProcessed))
        except msgspec.DecodeError as exc:
            raise codec.EventValidationError([codec.FieldError("", "schema", str(exc))]) from None

    codec.decode_event = decode_event  # type: ignore[attr-defined]


_install_decode_shim()
