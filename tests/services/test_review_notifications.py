"""Review finding in notification delivery: a pass that outlives its lease must not re-send what another
worker took over."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from conftest_an import feed, processed

from payevents.services import notifications
from payevents.services.notifications import delivery
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings


class Recorder:
    """A non-idempotent mailer (like SMTP) that records every message it is asked to send."""

    idempotent = False
    sent: ClassVar[Counter[str]] = Counter()

    def send(self, mail: delivery.Outgoing) -> None:
        Recorder.sent[mail.key] += 1

    def close(self) -> None:
        pass


def test_slow_pass_does_not_resend_what_another_worker_took_over(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifications.add_customer(store_settings, "cus_1", "Ann", "ann@example.com")
    feed(store_settings, SERVICE, [processed(f"p{i}", "3.00", "USD", customer_id="cus_1") for i in range(4)])
    Recorder.sent = Counter()
    monkeypatch.setattr(delivery, "open_mailer", lambda _settings: Recorder())
    real_render = delivery.render_confirmation
    rendered: list[int] = []
    took_over: list[Any] = []

    def render_then_other_worker(*args: Any, **kwargs: Any) -> Any:
        rendered.append(1)
        if len(rendered) == 2 and not took_over:  # the pass stalls past its 60 s lease: another worker runs
            took_over.append(None)
            took_over[0] = notifications.deliver_pending(
                store_settings, now=delivery.datetime.now(delivery.UTC) + timedelta(minutes=2))
        return real_render(*args, **kwargs)

    monkeypatch.setattr(delivery, "render_confirmation", render_then_other_worker)
    notifications.deliver_pending(store_settings)
    assert took_over and took_over[0].sent == 3
    assert sorted(Recorder.sent.values()) == [1, 1, 1, 1], Recorder.sent
    assert notifications.summary(store_settings)["sent"] == 4
