"""Notifications as a consumer of the channel: PaymentProcessed -> a confirmation e-mail to the customer.

The handler records the intent in the consumer's transaction; ``background`` (started by the runtime
next to the consumer) delivers it.
"""

from __future__ import annotations

import threading

from payevents.runtime.service import ServiceDef
from payevents.services.notifications.delivery import check_settings, run_delivery_processes
from payevents.services.notifications.handlers import fact_history, handle_batch, handle_processed
from payevents.services.notifications.store import MIGRATIONS, SERVICE_NAME
from payevents.settings import Settings


def background(settings: Settings, stop: threading.Event) -> None:
    """The delivery worker: sends pending confirmations until ``stop`` is set (in ``settings.delivery_processes``
    child processes, supervised from this thread and one more per further child:
    :func:`~payevents.services.notifications.delivery.run_delivery_processes`)."""
    run_delivery_processes(settings, stop)


SERVICE = ServiceDef(
    name=SERVICE_NAME,
    description="Payment confirmation e-mails to customers (SMTP, or a Maildir on the embedded default).",
    migrations=MIGRATIONS,
    handlers={"PaymentProcessed": handle_processed},
    downstream_action="Sends payment confirmation to customer",
    background=background,
    batch_handler=handle_batch,
    fact_history=fact_history,
    check=check_settings,
)
