"""The public API, each entry point on its own and together: publish from the caller's own transaction into an
outbox in the caller's own database, relay it, consume it with a Service declared by event class, on the
embedded log and on Apache Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import payevents
from card_leak import shows_test_card
from payevents import (
    Amount,
    ConfigError,
    Context,
    ContractError,
    EventValidationError,
    IdempotencyConflict,
    Migration,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    PoisonEvent,
    ProcessedMetadata,
    Relay,
    Service,
    ServiceHarness,
    Settings,
    install_outbox,
    publish,
)


def processed(payment_id: str, amount: str = "99.99", description: str = "Order") -> PaymentProcessed:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return PaymentProcessed(
        eventId=str(uuid.uuid4()), eventType="PaymentProcessed", timestamp=now, version="1.0.0",
        data=PaymentProcessedData(
            paymentId=payment_id, transactionId=f"txn_{payment_id}", customerId="cus_lib",
            amount=Amount(value=Decimal(amount), currency="USD"),
            paymentMethod=PaymentMethod(type="credit_card", last4="4242"), gatewayReference=f"gw_{payment_id}",
            processedAt=now, metadata=ProcessedMetadata(orderId=f"ORD-{payment_id}", description=description)))


def settlement() -> Service:
    svc = Service("settlement", migrations=[Migration(1, "settled", both=[
        "CREATE TABLE settled (event_id VARCHAR(64) PRIMARY KEY, payment_id VARCHAR(64) NOT NULL,"
        " amount VARCHAR(40) NOT NULL, legacy INTEGER NOT NULL)"])])

    @svc.handles(PaymentProcessed)
    def on_processed(conn: sa.Connection, event: PaymentProcessed, ctx: Context) -> None:
        if event.data.amount.value == Decimal("13.13"):
            raise PoisonEvent("settlement: 13.13 is refused on purpose")
        conn.execute(sa.text("INSERT INTO settled VALUES (:e, :p, :a, :l)"),
                     {"e": ctx.event_id, "p": ctx.payment_id, "a": str(event.data.amount.value), "l": int(ctx.legacy)})

    return svc


@pytest.fixture
def own_db(tmp_path: Path) -> Iterator[sa.Engine]:
    """The caller's own database, with a table of its own."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'checkout.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id VARCHAR(32) PRIMARY KEY, paid INTEGER NOT NULL)"))
    install_outbox(engine)
    install_outbox(engine)  # safe at every start
    yield engine
    engine.dispose()


def test_publish_writes_in_the_callers_transaction_and_keys_are_idempotent(own_db: sa.Engine) -> None:
    ev = processed("pay_lib_1")
    with own_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES ('ORD-1', 1)"))
        first = publish(conn, ev, idempotency_key="pay_lib_1:complete", env="dev", source="checkout")
    assert first.created and first.event_id == ev.eventId
    with own_db.begin() as conn:  # a retry with the same content: the first event, nothing written
        again = publish(conn, ev, idempotency_key="pay_lib_1:complete", env="dev", source="checkout")
    assert (again.created, again.event_id, again.seq) == (False, first.event_id, first.seq)
    other = processed("pay_lib_1", amount="10.00")
    with pytest.raises(IdempotencyConflict), own_db.begin() as conn:
        publish(conn, other, idempotency_key="pay_lib_1:complete", env="dev", source="checkout")

    # the caller's transaction rolls back: its order and its event are gone together
    with pytest.raises(RuntimeError), own_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES ('ORD-2', 1)"))
        publish(conn, processed("pay_lib_2"), idempotency_key="pay_lib_2:complete", env="dev", source="checkout")
        raise RuntimeError("the caller's own failure")
    with own_db.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM orders")).scalars().all() == ["ORD-1"]
        assert conn.execute(sa.text("SELECT idempotency_key FROM outbox_events")).scalars().all() == [
            "pay_lib_1:complete"]


def test_an_event_that_breaks_the_contract_is_refused_on_emit_naming_the_field(own_db: sa.Engine) -> None:
    import msgspec

    bad = processed("pay_lib_3")
    bad = msgspec.structs.replace(bad, data=msgspec.structs.replace(
        bad.data, amount=Amount(value=Decimal("-1.00"), currency="USD")))
    with pytest.raises(EventValidationError, match=r"data\.amount\.value: -1\.00 must be greater than 0"), \
            own_db.begin() as conn:
        publish(conn, bad, idempotency_key="pay_lib_3:complete", env="dev", source="checkout")


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"idempotency_key": "4111 1111 1111 1111"}, "headers.idempotencyKey: looks like a card number"),
    ({"source": "card 4111111111111111"}, "headers.source: looks like a card number"),
    ({"idempotency_key": "order\x00 1"}, "headers.idempotencyKey: holds the NUL character"),
    ({"source": "checkout\nERROR forged log line"}, "headers.source: holds a control character"),
    ({"producer": "p" * 256}, "headers.producer: 256 characters; at most 255"),
    ({"correlation_id": "c" * 300}, "headers.correlationId: 300 characters; at most 255"),
])
def test_a_header_a_store_or_a_log_cannot_take_is_refused_naming_it(own_db: sa.Engine, kwargs: dict[str, str],
                                                                    rule: str) -> None:
    """The audit headers a caller gives ``publish`` follow the rules of free text entering a store: until
    2026-12-02 a card number in an idempotency key or a source was stored in the outbox and published on the
    channel, a NUL failed on PostgreSQL and a line break went into every log line that printed the header."""
    args = {"idempotency_key": "pay_lib_9:complete", "env": "dev", "source": "checkout", **kwargs}
    with pytest.raises(ContractError, match=rule) as err, own_db.begin() as conn:
        publish(conn, processed("pay_lib_9"), **args)  # type: ignore[arg-type]
    assert not shows_test_card(str(err.value)) and "forged" not in str(err.value)
    with own_db.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM outbox_events")).scalar_one() == 0


def test_published_events_reach_a_service_declared_by_event_class(own_db: sa.Engine,
                                                                 transport_settings: Settings) -> None:
    events = [processed(f"pay_lib_{i}") for i in range(5)] + [processed("pay_lib_poison", amount="13.13")]
    with own_db.begin() as conn:
        for ev in events:
            publish(conn, ev, idempotency_key=f"{ev.data.paymentId}:complete", env="dev", source="checkout")
    with ServiceHarness(settlement(), broker=transport_settings.broker, kafka_config=transport_settings.kafka_config,
                        data_dir=transport_settings.data_dir) as h:
        with Relay(h.settings, engine=own_db) as relay:  # a relay for the caller's outbox
            relay.ensure_topics()
            while relay.publish_pending():
                pass
        h.run_until_idle()
        got = h.query("SELECT payment_id, amount FROM settled ORDER BY payment_id")
        assert got == [(f"pay_lib_{i}", "99.99") for i in range(5)]
        [letter] = h.dead_letters()
        assert "13.13 is refused on purpose" in letter.reason
        assert h.stats.applied == 5 and h.stats.dead_lettered == 1


def test_a_service_is_typed_by_event_class_and_named_safely() -> None:
    svc = Service("fraud_check")
    with pytest.raises(ConfigError, match="no handler"):
        _ = svc.definition

    @svc.handles(PaymentProcessed)
    def _h(conn: sa.Connection, event: PaymentProcessed, ctx: Context) -> None: ...

    assert set(svc.definition.handlers) == {"PaymentProcessed"}
    with pytest.raises(ConfigError, match="already has a handler"):
        svc.handles(PaymentProcessed)(_h)
    with pytest.raises(ConfigError, match="not a lifecycle event class"):
        svc.handles(dict)  # type: ignore[type-var]
    for bad in ("", "Fraud", "fraud-check", "x" * 49, "../x"):
        with pytest.raises(ConfigError):
            Service(bad)


@pytest.mark.parametrize(("url", "rule"), [("mysql://app:s3cret@db/payments", "mysql:// is not supported"),
                                           ("payments.db", "no scheme:// given")])
def test_a_database_the_stores_cannot_use_is_refused_when_the_service_is_declared(tmp_path: Path, url: str,
                                                                                 rule: str) -> None:
    """A service's own ``database_url`` gets the settings' rule, where it is declared and where an engine is
    made: until 2026-12-02 ``mysql://`` ended the worker's start in ``ModuleNotFoundError: No module named
    'MySQLdb'`` and a bare path in SQLAlchemy's ArgumentError. The URL's password is never shown."""
    with pytest.raises(ConfigError, match=f"service fraud_check: database_url: {rule}") as declared:
        Service("fraud_check", database_url=url)
    from payevents.store.db import make_engine

    with pytest.raises(ConfigError, match=f"database URL: {rule}") as made:
        make_engine(url)
    assert "s3cret" not in str(declared.value) + str(made.value)


@pytest.mark.parametrize(("migrations", "rule"), [
    ([Migration(1, "a", both=["SELECT 1"]), Migration(1, "b", both=["SELECT 2"])],
     r"migration versions must be unique and increasing: \[1, 1\]"),
    ([Migration(2, "a", both=["SELECT 1"]), Migration(1, "b", both=["SELECT 2"])],
     r"migration versions must be unique and increasing: \[2, 1\]"),
    ([Migration(0, "zero", both=["SELECT 1"])],
     r"migration 0: its version must be a whole number from 1 to 2,147,483,647"),
    ([Migration(2**31, "big", both=["SELECT 1"])], r"migration 2147483648: its version must be a whole number from 1"),
    ([Migration("1", "text", both=["SELECT 1"])], r"migration '1': its version must be a whole number"),  # type: ignore[arg-type]
    ([Migration(1, "", both=["SELECT 1"])], r"migration 1: its name must be 1 to 200 characters"),
    ([Migration(1, "n" * 201, both=["SELECT 1"])], r"migration 1: its name must be 1 to 200 characters"),
    ([Migration(1, "flags", both="CREATE TABLE flags (id TEXT)")],  # type: ignore[arg-type]
     r"migration 1 \('flags'\): both must be a list of SQL statements, not one string"),
    ([Migration(1, "flags", postgresql=[42])],  # type: ignore[list-item]
     r"migration 1 \('flags'\): postgresql must be a list of SQL statements"),
    (["CREATE TABLE flags (id TEXT)"], r"'CREATE TABLE flags \(id TEXT\)' is not a Migration"),
])
def test_migrations_a_store_cannot_apply_are_refused_when_the_service_is_declared(migrations: list[Any],
                                                                                rule: str) -> None:
    """Until 2026-12-02 these were taken where the service was declared: a repeated or unordered version ended
    each start of its worker in a ValueError (a crash, restarted for ever), a statement given as one string ran
    its first character as SQL (a syntax error at each start), a version PostgreSQL's INTEGER cannot hold or a
    name longer than its VARCHAR(200) failed there only."""
    with pytest.raises(ConfigError, match=f"service fraud_check: {rule}"):
        Service("fraud_check", migrations=migrations)


def test_a_service_may_not_take_the_name_of_an_installed_one() -> None:
    """Its consumer group and store are named after it: a team's own ``ledger`` would have shared the built-in
    ledger's group (each reading half the partitions, so each missing half the events) and its database."""
    from payevents.runtime.runner import resolve_service

    with pytest.raises(ConfigError, match=f"service: 'ledger' of {__name__}:SHADOW is the name of the installed"
                                          " service ledger"):
        resolve_service(f"{__name__}:SHADOW")


SHADOW = Service("ledger")


@SHADOW.handles(PaymentProcessed)
def _shadow(conn: sa.Connection, event: PaymentProcessed, ctx: Context) -> None: ...


def test_built_in_services_are_found_through_entry_points_like_any_other() -> None:
    from payevents.runtime.runner import expand, resolve_service
    from payevents.services import registered_services

    assert {"ledger", "invoices", "analytics", "notifications"} <= set(registered_services())
    assert resolve_service("ledger").name == "ledger"
    with pytest.raises(ConfigError, match="not one of"):
        expand(["fraud"])
    with pytest.raises(ConfigError, match="cannot load"):
        resolve_service("no_such_module_xyz:service")
    assert set(payevents.__all__) >= {"Service", "publish", "install_outbox", "Relay", "ServiceHarness"}


def test_a_service_writes_its_effects_in_the_callers_own_database(tmp_path: Path) -> None:
    own = f"sqlite:///{tmp_path / 'crm.db'}"
    svc = Service("crm_sync", database_url=own, migrations=[Migration(1, "synced", both=[
        "CREATE TABLE synced (event_id VARCHAR(64) PRIMARY KEY, customer_id VARCHAR(64) NOT NULL)"])])

    @svc.handles(PaymentProcessed)
    def _sync(conn: sa.Connection, event: PaymentProcessed, ctx: Context) -> None:
        conn.execute(sa.text("INSERT INTO synced VALUES (:e, :c)"), {"e": ctx.event_id, "c": event.data.customerId})

    ev = processed("pay_crm_1")
    with ServiceHarness(svc, data_dir=tmp_path / "data") as h:
        h.publish(ev)
        h.run_until_idle()
    engine = sa.create_engine(own)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT event_id, customer_id FROM synced")).all() == [(ev.eventId, "cus_lib")]
        # the runtime's seen marks share that database and transaction: exactly once holds there too
        marks = sa.text("SELECT COUNT(*) FROM processed_events WHERE service = 'crm_sync'")
        assert conn.execute(marks).scalar_one() == 1
    engine.dispose()
    assert not (tmp_path / "data" / "crm_sync.db").exists()
