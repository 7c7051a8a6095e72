"""Cost of writing one confirmation e-mail: the hand-written MIME writer against the email package (see
docs/architecture.md, 'E-mail messages'). Run: .venv/bin/python tools/mailbench.py"""
import time, uuid, email.policy
from payevents.services.notifications.render import build_message, message_bytes
kw = dict(payment_id="pay_1", mail_from="payments@payevents.local", recipient="john@example.com",
          recipient_name="Jöhn Doe", subject="Zahlungsbestätigung: 99,99 $", text="Hallo Jöhn,\n\nwir haben Ihre Zahlung erhalten.\n"*3,
          html="<p>Hallo Jöhn</p>"*5, created_at="2026-11-30T12:00:00+00:00")
ids = [str(uuid.uuid4()) for _ in range(3000)]
for name, fn in (("hand-written message_bytes", lambda e: message_bytes(event_id=e, **kw)),
                 ("email package build_message().as_bytes(policy=SMTP)", lambda e: build_message(event_id=e, **kw).as_bytes(policy=email.policy.SMTP))):
    best = 1e9
    for _ in range(3):
        t = time.process_time()
        for e in ids: fn(e)
        best = min(best, time.process_time() - t)
    print(f"{name}: {best / len(ids) * 1e6:.0f} µs per message")
