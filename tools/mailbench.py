"""Cost of writing one confirmation e-mail: the hand-written MIME writer against the email package (see
docs/architecture.md, 'E-mail messages'). Run: .venv/bin/python tools/mailbench.py"""

from __future__ import annotations

import email.policy
import time
import uuid
from collections.abc import Callable

from payevents.services.notifications.render import build_message, message_bytes

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
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for event_id in ids:
                write(event_id)
            best = min(best, time.process_time() - started)
        print(f"{name}: {best / len(ids) * 1e6:.0f} µs per message")


if __name__ == "__main__":
    main()
