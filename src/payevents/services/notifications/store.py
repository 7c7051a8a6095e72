"""The notifications store: the customer directory and one notification row per PaymentProcessed.

A notification row is the delivery intent, written in the consumer's transaction (unique eventId:
a replay adds nothing): the recipient resolved from the directory and the event itself; the worker
renders the mail from it when it sends (so a re-send is the same mail with the same Message-ID).
Its status is ``pending`` until the delivery worker sends it (``sent``), gives up on a permanent SMTP
refusal (``failed``), or it was never sendable (``skipped``, with the reason).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from payevents.settings import Settings
from payevents.store.db import Migration, connect

SERVICE_NAME = "notifications"
STATUSES: tuple[str, ...] = ("pending", "sent", "failed", "skipped")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "customer directory and notification intents",
        both=(
            "CREATE TABLE customers ("
            " customer_id VARCHAR(255) PRIMARY KEY,"
            " name VARCHAR(255) NOT NULL,"
            " email VARCHAR(320),"
            " locale VARCHAR(35) NOT NULL,"
            " created_at VARCHAR(40) NOT NULL,"
            " updated_at VARCHAR(40) NOT NULL)",
            "CREATE TABLE notifications ("
            " event_id VARCHAR(64) PRIMARY KEY,"
            " payment_id VARCHAR(255) NOT NULL,"
            " customer_id VARCHAR(255),"
            " status VARCHAR(16) NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),"
            " reason_code VARCHAR(64),"
            " reason TEXT,"
            " recipient VARCHAR(320),"
            " recipient_name VARCHAR(255),"
            " locale VARCHAR(35),"
            " event_json TEXT,"
            " subject TEXT,"
            " message_id VARCHAR(255),"
            " amount VARCHAR(64) NOT NULL,"
            " currency CHAR(3) NOT NULL,"
            " legacy SMALLINT NOT NULL DEFAULT 0,"
            " attempts INTEGER NOT NULL DEFAULT 0,"
            " next_attempt_ms BIGINT NOT NULL,"
            " claimed_until_ms BIGINT,"
            " claim_token VARCHAR(64),"
            " last_error TEXT,"
            " created_at VARCHAR(40) NOT NULL,"
            " sent_at VARCHAR(40))",
            "CREATE INDEX ix_notifications_due ON notifications (status, next_attempt_ms)",
            "CREATE INDEX ix_notifications_claim ON notifications (claim_token)",
            "CREATE INDEX ix_notifications_payment ON notifications (payment_id)",
        ),
    ),
    # issue #14: a claim token is set only while a delivery pass holds the intent (every mark clears it), and it is
    # only ever looked up by value; the index of every row held a NULL entry for each intent inserted and each
    # version a mark wrote. Now it holds the intents in flight only.
    Migration(
        2,
        "claim tokens indexed only while set",
        both=(
            "DROP INDEX ix_notifications_claim",
            "CREATE INDEX ix_notifications_claim ON notifications (claim_token) WHERE claim_token IS NOT NULL",
        ),
    ),
)


def engine(settings: Settings) -> Engine:
    """The notifications database with its migrations applied."""
    return connect(settings, SERVICE_NAME, MIGRATIONS)
