"""Notifications — "sends payment confirmation to customer".

A customer directory, confirmation intents recorded by the consumer, and a delivery worker that sends
each exactly once (SMTP, or the Maildir ``{data_dir}/maildir`` on the embedded default).
"""

from __future__ import annotations

from payevents.services.notifications.customers import Customer, add_customer, get_customer, list_customers
from payevents.services.notifications.delivery import (
    DeliveryReport,
    deliver_pending,
    maildir_path,
    next_due_in,
    parse_smtp_url,
    run_delivery,
)
from payevents.services.notifications.queries import Notification, get_notification, list_notifications, summary

__all__ = [
    "Customer",
    "DeliveryReport",
    "Notification",
    "add_customer",
    "deliver_pending",
    "get_customer",
    "get_notification",
    "list_customers",
    "list_notifications",
    "maildir_path",
    "next_due_in",
    "parse_smtp_url",
    "run_delivery",
    "summary",
]
