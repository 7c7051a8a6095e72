"""Notifications end to end: events on the channel -> ConsumerRuntime.run() with the service's
background delivery worker -> a live SMTP server; one message per payment."""

from __future__ import annotations

import threading
import time

from conftest_an import SmtpSink, legacy_envelope, processed, publish

from payevents.runtime.consumer import ConsumerRuntime
from payevents.services import notifications
from payevents.services.notifications.render import message_id_for
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings


def test_runtime_run_records_intents_and_background_delivers_once(settings: Settings) -> None:
    sink = SmtpSink().start()
    try:
        settings = settings.replace(smtp_url=sink.url)
        notifications.add_customer(settings, "cus_a", "Ann", "ann@example.com", "en_GB")
        notifications.add_customer(settings, "cus_b", "Bea", "bea@example.com", "fr_FR")
        events = [processed(f"pay_{i}", f"{10 + i}.50", "GBP" if i % 2 else "EUR",
                            customer_id="cus_a" if i % 2 else "cus_b") for i in range(8)]
        events.append(processed("pay_ghost", "1.00", "EUR", customer_id="cus_ghost"))
        publish(settings, events)
        publish(settings, events[:4])  # re-sent records
        publish(settings, [legacy_envelope("PAY-LEGACY", "99.99")], keys=["PAY-LEGACY"])

        stop = threading.Event()
        rt = ConsumerRuntime(settings, SERVICE, max_batch=5, poll_timeout=0.1)
        worker = threading.Thread(target=rt.run, args=(stop,))
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(sink.received()) < 8 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # anything extra would arrive now
        finally:
            stop.set()
            worker.join(30)
        got = sink.received()
        assert len(got) == 8
        assert sorted(m["Message-ID"] for m in got) == sorted(
            message_id_for(e.event_id, settings.mail_from) for e in events[:8])
        fr = next(m for m in got if m["X-Payevents-Payment-Id"] == "pay_0")
        assert fr.rcpt_tos == ["bea@example.com"] and "10,50\xa0€" in fr["Subject"]
        skipped = {n.payment_id: n.reason_code for n in notifications.list_notifications(settings, status="skipped")}
        assert skipped == {"pay_ghost": "unknown_customer", "PAY-LEGACY": "no_customer_id"}
    finally:
        sink.stop()
