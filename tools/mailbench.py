"""Cost of writing one confirmation e-mail: the hand-written MIME writer against the email package, and the
precompiled templates against Jinja rendering the same .j2 files (see docs/architecture.md, 'E-mail messages',
'E-mail delivery'). Run: .venv/bin/python tools/mailbench.py"""

from __future__ import annotations

import email.policy
import time
import uuid
from collections.abc import Callable

from payevents.bench.events import make_events
from payevents.contracts.codec import decode_event
from payevents.contracts.events import PaymentProcessed
from payevents.services.notifications.render import build_message, message_bytes, render_confirmation, render_with_jinja

KW = {
    "payment_id": "pay_1", "mail_from": "payments@payevents.local", "recipient": "john@example.com",
    "recipient_name": "Jöhn Doe", "subject": "Zahlungsbestätigung: 99,99 $",
    "text": "Hallo Jöhn,\n\nwir haben Ihre Zahlung erhalten.\n" * 3, "html": "<p>Hallo Jöhn</p>" * 5,
    "created_at": "2026-11-30T12:00:00+00:00",
}


def main() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3000)]
    writers: dict[str, Callable[[str], bytes]] = {
        "hand-written message_bytes": lambda e: message_bytes(event_id=e, **KW),  # type: ignore[arg-type]
        "email package build_message().as_bytes(policy=SMTP)":
            lambda e: build_message(event_id=e, **KW).as_bytes(policy=email.policy.SMTP),  # type: ignore[arg-type]
    }
    for name, write in writers.items():
        print(f"{name}: {_best(lambda w=write: [w(e) for e in ids]) / len(ids) * 1e6:.0f} µs per message")
    events = [decode_event(e.value).event for e in make_events(len(ids))]
    renderers: dict[str, Callable[[PaymentProcessed], object]] = {
        "precompiled templates render_confirmation": lambda e: render_confirmation(e, "Jöhn Doe", "de_DE", "p@x.io"),
        "Jinja render_with_jinja": lambda e: render_with_jinja(e, "Jöhn Doe", "de_DE", "p@x.io"),
    }
    for name, render in renderers.items():
        print(f"{name}: {_best(lambda r=render: [r(e) for e in events]) / len(events) * 1e6:.0f} µs per confirmation")


def _best(work: Callable[[], object]) -> float:
    """The least CPU time of three runs of ``work``."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


if __name__ == "__main__":
    main()
