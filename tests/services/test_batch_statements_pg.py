"""On PostgreSQL a batch's rows reach the server as one statement per table, never as a statement per row.

A driver-level executemany is a statement per row on the server: on these machines it cost 140–240 µs of the
backend's CPU a row, against about 20 µs in one COPY or one ``UPDATE ... FROM unnest(...)`` (issue #14,
``runtime.bulk``). The payments writer (payments, their commands, the outbox's events and pending rows), the
relay's marks and the e-mail delivery's marks write through ``runtime.bulk``; here the driver's statements are
watched while they work, and each test also checks what they wrote."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest_an import feed, processed

from payevents.runtime import audit
from payevents.runtime.outbox import pending_count, published_delays
from payevents.runtime.relay import Relay
from payevents.services import notifications
from payevents.services import payments as P
from payevents.services.notifications.service import SERVICE
from payevents.services.payments import store as payments_store
from payevents.settings import Settings


@pytest.fixture
def many_row_statements() -> Iterator[list[str]]:
    """The statements a driver ran with more than one set of parameters (an executemany of many rows)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if executemany and len(parameters) > 1:
            seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)


def test_payments_writer_sends_each_table_in_one_statement(pg_settings: Settings,
                                                           many_row_statements: list[str]) -> None:
    specs = [P.PaymentSpec(customer_id=f"cus_{i}", amount="5.00", currency="EUR", description="d", last4="4242")
             for i in range(30)]
    written = P.process_payments(pg_settings, specs)
    assert many_row_statements == []
    assert len(written) == 30 and {p.state for p in written} == {"processed"}
    assert pending_count(payments_store.engine(pg_settings)) == sum(len(p.events) for p in written) == 120
    assert audit.verify(pg_settings).ok  # the hash chain over the rows as PostgreSQL stored them


def test_relay_marks_a_pass_in_one_statement(pg_settings: Settings, many_row_statements: list[str]) -> None:
    P.process_payments(pg_settings, [P.PaymentSpec(customer_id=f"cus_{i}", amount="5.00", currency="EUR",
                                                   description="d") for i in range(30)])
    with Relay(pg_settings) as relay:
        relay.ensure_topics()
        many_row_statements.clear()
        while relay.publish_pending():
            pass
    assert many_row_statements == []
    engine = payments_store.engine(pg_settings)
    assert pending_count(engine) == 0
    assert len(published_delays(engine)) == 120


def test_delivery_marks_a_pass_in_one_statement(pg_settings: Settings, many_row_statements: list[str]) -> None:
    notifications.add_customer(pg_settings, "cus_a", "Ann", "ann@example.com", "en_US")
    feed(pg_settings, SERVICE, [processed(f"pay_{i}", "10.00", "EUR", customer_id="cus_a") for i in range(12)])
    many_row_statements.clear()
    report = notifications.deliver_pending(pg_settings, 100)
    assert many_row_statements == []
    assert (report.claimed, report.sent) == (12, 12)
    sent = notifications.list_notifications(pg_settings, status="sent")
    assert len(sent) == 12 and all(n.sent_at and n.subject and n.message_id for n in sent)
