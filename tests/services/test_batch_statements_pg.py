"""On PostgreSQL a batch's rows reach the server as one statement per table, never as a statement per row.

A driver-level executemany is a statement per row on the server: on these machines it cost 140–240 µs of the
backend's CPU a row, against about 20 µs in one COPY or one ``UPDATE ... FROM unnest(...)`` (issue #14,
``runtime.bulk``). The payments writer (payments, their commands, the outbox's events and pending rows), the
relay's marks and the e-mail delivery's marks write through ``runtime.bulk``; here the driver's statements are
watched while they work, and each test also checks what they wrote."""

from __future__ import annotations

from typing import Any

from conftest_an import driver_statements, feed, processed

from payevents.runtime import audit
from payevents.runtime.outbox import pending_count, published_delays
from payevents.runtime.relay import Relay
from payevents.services import notifications
from payevents.services import payments as P
from payevents.services.notifications.service import SERVICE
from payevents.services.payments import store as payments_store
from payevents.settings import Settings


def _many_rows(statements: list[tuple[str, Any, bool]]) -> list[str]:
    """The statements run as an executemany of more than one row."""
    return [sql for sql, parameters, executemany in statements if executemany and len(parameters) > 1]


def test_payments_writer_sends_each_table_in_one_statement(pg_settings: Settings) -> None:
    specs = [P.PaymentSpec(customer_id=f"cus_{i}", amount="5.00", currency="EUR", description="d", last4="4242")
             for i in range(30)]
    with driver_statements() as statements:
        written = P.process_payments(pg_settings, specs)
    assert _many_rows(statements) == []
    assert len(written) == 30 and {p.state for p in written} == {"processed"}
    assert pending_count(payments_store.engine(pg_settings)) == sum(len(p.events) for p in written) == 120
    assert audit.verify(pg_settings).ok  # the hash chain over the rows as PostgreSQL stored them


def test_relay_marks_a_pass_in_one_statement(pg_settings: Settings) -> None:
    P.process_payments(pg_settings, [P.PaymentSpec(customer_id=f"cus_{i}", amount="5.00", currency="EUR",
                                                   description="d") for i in range(30)])
    with Relay(pg_settings) as relay:
        relay.ensure_topics()
        with driver_statements() as statements:
            while relay.publish_pending():
                pass
    assert _many_rows(statements) == []
    engine = payments_store.engine(pg_settings)
    assert pending_count(engine) == 0
    assert len(published_delays(engine)) == 120


def test_delivery_marks_a_pass_in_one_statement(pg_settings: Settings) -> None:
    notifications.add_customer(pg_settings, "cus_a", "Ann", "ann@example.com", "en_US")
    feed(pg_settings, SERVICE, [processed(f"pay_{i}", "10.00", "EUR", customer_id="cus_a") for i in range(12)])
    with driver_statements() as statements:
        report = notifications.deliver_pending(pg_settings, 100)
    assert _many_rows(statements) == []
    assert (report.claimed, report.sent) == (12, 12)
    sent = notifications.list_notifications(pg_settings, status="sent")
    assert len(sent) == 12 and all(n.sent_at and n.subject and n.message_id for n in sent)
