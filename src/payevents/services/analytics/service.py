"""Analytics as a consumer of the channel: every lifecycle event updates metrics and revenue."""

from __future__ import annotations

from payevents.runtime.service import ServiceDef
from payevents.services.analytics.handlers import TIME_FIELDS, fact_history, handle_batch, handle_event
from payevents.services.analytics.store import MIGRATIONS, SERVICE_NAME

SERVICE = ServiceDef(
    name=SERVICE_NAME,
    description="Payment metrics (counts, volumes, failure rates, stage times) and revenue reports per currency.",
    migrations=MIGRATIONS,
    handlers={event_type: handle_event for event_type in TIME_FIELDS},
    downstream_action="Updates payment metrics and revenue reports",
    batch_handler=handle_batch,
    fact_history=fact_history,
)
