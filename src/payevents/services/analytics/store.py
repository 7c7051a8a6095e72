"""The analytics store: one fact row per event (unique eventId) and one row per payment.

Facts are written once per event (``ON CONFLICT DO NOTHING``: a replay adds nothing); every figure is
an aggregate over them, so a replay from the beginning gives identical figures. The per-payment row
keeps each lifecycle timestamp (first write wins) for the authorization-to-capture and
capture-to-processed times, and the method type and merchant that later events may not carry.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from payevents.settings import Settings
from payevents.store.db import Migration, connect

SERVICE_NAME = "analytics"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event facts and per-payment timestamps",
        both=(
            "CREATE TABLE analytics_events ("
            " event_id VARCHAR(64) PRIMARY KEY,"
            " event_type VARCHAR(32) NOT NULL,"
            " payment_id VARCHAR(255) NOT NULL,"
            " occurred_ms BIGINT NOT NULL,"
            " day CHAR(10) NOT NULL,"
            " month CHAR(7) NOT NULL,"
            " currency CHAR(3) NOT NULL,"
            " amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),"
            " method_type VARCHAR(64),"
            " merchant_id VARCHAR(255),"
            " failure_code VARCHAR(64),"
            " failed_stage VARCHAR(32),"
            " legacy SMALLINT NOT NULL DEFAULT 0)",
            "CREATE INDEX ix_analytics_events_type_day ON analytics_events (event_type, day, currency)",
            "CREATE INDEX ix_analytics_events_type_month ON analytics_events (event_type, month, currency)",
            "CREATE INDEX ix_analytics_events_payment ON analytics_events (payment_id)",
            "CREATE TABLE analytics_payments ("
            " payment_id VARCHAR(255) PRIMARY KEY,"
            " currency CHAR(3),"
            " method_type VARCHAR(64),"
            " merchant_id VARCHAR(255),"
            " initiated_ms BIGINT,"
            " authorized_ms BIGINT,"
            " captured_ms BIGINT,"
            " processed_ms BIGINT,"
            " failed_ms BIGINT)",
        ),
    ),
    # issue #14: nothing reads analytics_events by payment_id (the queries filter by type and day, and join
    # analytics_payments by its primary key), and a random key is the costly kind of index to keep up per insert
    Migration(2, "no index of analytics_events by payment", both=("DROP INDEX ix_analytics_events_payment",)),
    # issue #14: nor by month — the revenue report by month selects its rows by day (ix_analytics_events_type_day,
    # then groups them), and the counts per type scan the day index as well as they scanned this one
    Migration(3, "no index of analytics_events by month", both=("DROP INDEX ix_analytics_events_type_month",)),
)


def engine(settings: Settings) -> Engine:
    """The analytics database with its migrations applied."""
    return connect(settings, SERVICE_NAME, MIGRATIONS)
