"""A per-customer velocity check, built only on payevents' public API.

It flags a customer who completes more than ``LIMIT`` payments within ``WINDOW``: the kind of burst a card
tester or a compromised account produces. Each processed payment is recorded once (the runtime removes
duplicate deliveries by eventId; the table's primary key would refuse one anyway); a payment that arrives
inside a window holding more than ``LIMIT`` payments is flagged with how many the window holds.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents import Context, Migration, PaymentProcessed, Service

LIMIT = 3
WINDOW = timedelta(minutes=10)

service = Service(
    "velocity",
    description="Flags customers with unusual bursts of completed payments.",
    downstream_action="Flags more than 3 completed payments per customer within 10 minutes",
    migrations=[
        Migration(1, "velocity tables", both=[
            "CREATE TABLE velocity_payments (event_id VARCHAR(64) PRIMARY KEY, customer_id VARCHAR(255) NOT NULL,"
            " payment_id VARCHAR(255) NOT NULL, processed_at_ms BIGINT NOT NULL, amount VARCHAR(40) NOT NULL,"
            " currency CHAR(3) NOT NULL)",
            "CREATE INDEX velocity_by_customer ON velocity_payments (customer_id, processed_at_ms)",
            "CREATE TABLE velocity_flags (event_id VARCHAR(64) PRIMARY KEY, customer_id VARCHAR(255) NOT NULL,"
            " payment_id VARCHAR(255) NOT NULL, payments_in_window INTEGER NOT NULL, window_seconds INTEGER NOT NULL)",
        ]),
    ],
)


@service.handles(PaymentProcessed)
def on_processed(conn: Connection, event: PaymentProcessed, ctx: Context) -> None:
    data = event.data
    customer = data.customerId if isinstance(data.customerId, str) else None
    if customer is None:  # only the channel page's older envelope (ctx.legacy) names no customer
        return
    at_ms = int(data.processedAt.timestamp() * 1000)
    conn.execute(sa.text(
        "INSERT INTO velocity_payments (event_id, customer_id, payment_id, processed_at_ms, amount, currency)"
        " VALUES (:e, :c, :p, :t, :a, :cur)"),
        {"e": ctx.event_id, "c": customer, "p": data.paymentId, "t": at_ms, "a": str(data.amount.value),
         "cur": data.amount.currency})
    window_ms = int(WINDOW.total_seconds() * 1000)
    # a payment's events arrive in order, but different payments of one customer travel on different
    # partitions: the check must not depend on their arrival order. The densest window of WINDOW's length
    # that contains this payment counts every payment stored so far, so the last of a burst to arrive sees
    # the whole burst, whatever the order.
    times = sorted(int(t) for t in conn.execute(sa.text(
        "SELECT processed_at_ms FROM velocity_payments WHERE customer_id = :c AND processed_at_ms >= :lo"
        " AND processed_at_ms <= :hi"), {"c": customer, "lo": at_ms - window_ms, "hi": at_ms + window_ms}).scalars())
    n = max(sum(1 for t in times if start <= t <= start + window_ms) for start in times if start <= at_ms
            and start + window_ms >= at_ms)
    if n > LIMIT:
        conn.execute(sa.text(
            "INSERT INTO velocity_flags (event_id, customer_id, payment_id, payments_in_window, window_seconds)"
            " VALUES (:e, :c, :p, :n, :w)"),
            {"e": ctx.event_id, "c": customer, "p": data.paymentId, "n": n, "w": window_ms // 1000})


def flags(conn: Connection) -> list[tuple[str, str, int]]:
    """(customer_id, payment_id, payments_in_window) of every flag, by payment id."""
    return [(str(c), str(p), int(n)) for c, p, n in conn.execute(sa.text(
        "SELECT customer_id, payment_id, payments_in_window FROM velocity_flags ORDER BY payment_id"))]
