"""Notifications against a live SMTP server on loopback (aiosmtpd): exactly one message per payment,
outages, refusals, a crash between send and mark, and authentication."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest_an import SmtpSink, feed, processed

from payevents.services import notifications
from payevents.services.notifications import delivery
from payevents.services.notifications.render import message_id_for
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def _customers(settings: Settings) -> dict[str, str]:
    emails = {"cus_a": "ann@example.com", "cus_b": "bob@example.org", "cus_c": "chloe@example.net"}
    for cid, addr in emails.items():
        notifications.add_customer(settings, cid, cid.upper(), addr, "en_US")
    return emails


def _drain(settings: Settings, now: datetime | None = None, limit: int = 4) -> int:
    sent = 0
    for _ in range(100):
        r = notifications.deliver_pending(settings, limit, now=now)
        sent += r.sent
        if r.claimed == 0:
            return sent
    raise AssertionError("delivery did not settle")


def test_one_message_per_payment_even_when_events_repeat(store_settings: Settings, smtp: SmtpSink) -> None:
    settings = store_settings.replace(smtp_url=smtp.url)
    emails = _customers(settings)
    events = [processed(f"pay_{i}", f"{i + 1}.{i:02d}", "USD", customer_id=f"cus_{'abc'[i % 3]}")
              for i in range(12)]
    feed(settings, SERVICE, events + events[3:9] + events, batch=7)  # duplicates and a replay

    # two workers at once, several passes each: the claim lets each intent go out once
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(_drain(settings))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sum(results) == 12
    _drain(settings)

    got = smtp.received()
    assert len(got) == 12
    by_payment = {m["X-Payevents-Payment-Id"]: m for m in got}
    for i, ev in enumerate(events):
        m = by_payment[f"pay_{i}"]
        expected_amount = f"${i + 1}.{i:02d}"
        assert m.rcpt_tos == [emails[f"cus_{'abc'[i % 3]}"]]
        assert m["To"].addresses[0].addr_spec == emails[f"cus_{'abc'[i % 3]}"]
        assert m["Subject"] == f"Payment confirmation: {expected_amount}"
        assert expected_amount in m.get_body(("plain",)).get_content()
        assert m["Message-ID"] == message_id_for(ev.event_id, settings.mail_from)
        assert m.mail_from == "payments@payevents.local"
    sent = notifications.list_notifications(settings, status="sent")
    assert len(sent) == 12 and all(n.attempts == 1 and n.sent_at for n in sent)


def test_smtp_down_for_a_while_then_everything_goes_out_once(store_settings: Settings, smtp: SmtpSink) -> None:
    settings = store_settings.replace(smtp_url=smtp.url)
    _customers(settings)
    events = [processed(f"pay_{i}", "10.00", "EUR", customer_id="cus_a") for i in range(6)]
    feed(settings, SERVICE, events)

    smtp.stop()
    t0 = datetime.now(UTC)
    r = notifications.deliver_pending(settings, now=t0)
    assert (r.claimed, r.sent, r.retried) == (6, 0, 6)
    pending = notifications.list_notifications(settings, status="pending")
    assert len(pending) == 6 and all(n.attempts == 1 and "SMTP unavailable" in (n.last_error or "") for n in pending)
    # backoff: nothing is retried before its time, however often the worker looks
    assert notifications.deliver_pending(settings, now=t0 + timedelta(seconds=1)).claimed == 0
    # still down at the first retry: the next wait doubles
    r = notifications.deliver_pending(settings, now=t0 + timedelta(seconds=2))
    assert (r.claimed, r.retried) == (6, 6)
    assert notifications.deliver_pending(settings, now=t0 + timedelta(seconds=5)).claimed == 0
    assert notifications.next_due_in(settings, now=t0 + timedelta(seconds=2)) == timedelta(seconds=4)

    smtp.start()  # back on the same port
    assert _drain(settings, now=t0 + timedelta(seconds=6)) == 6
    assert _drain(settings, now=t0 + timedelta(hours=1)) == 0
    got = smtp.received()
    assert len(got) == 6
    assert Counter(m["Message-ID"] for m in got) == Counter(
        {message_id_for(e.event_id, settings.mail_from): 1 for e in events})
    assert {n.attempts for n in notifications.list_notifications(settings, status="sent")} == {3}


def test_crash_between_send_and_mark_resends_once_with_the_same_message_id(
    settings: Settings, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.replace(smtp_url=smtp.url)
    _customers(settings)
    events = [processed(f"pay_{i}", "1.00", "USD", customer_id="cus_b") for i in range(3)]
    feed(settings, SERVICE, events)

    def crash(conn: object, marks: object) -> None:
        raise KeyboardInterrupt("the worker died after sending, before marking")

    with monkeypatch.context() as m:
        m.setattr(delivery, "_apply_marks", crash)
        with pytest.raises(KeyboardInterrupt):
            notifications.deliver_pending(settings)
    (sent_unmarked,) = smtp.received()  # SMTP marks after every message: one sent, unmarked
    now = datetime.now(UTC)
    assert notifications.deliver_pending(settings, now=now).claimed == 0  # the dead worker's lease holds
    assert _drain(settings, now=now + timedelta(seconds=61)) == 3  # lease expired: re-claimed
    assert _drain(settings, now=now + timedelta(hours=1)) == 0
    ids = Counter(m["Message-ID"] for m in smtp.received())
    first = str(sent_unmarked["Message-ID"])  # the first claimed (intents created in the same ms tie on eventId)
    expected = {message_id_for(e.event_id, settings.mail_from): 1 for e in events}
    assert first in expected
    assert ids == Counter({**expected, first: 2})


def test_refusals_permanent_fail_transient_retry_then_give_up(store_settings: Settings, smtp: SmtpSink) -> None:
    settings = store_settings.replace(smtp_url=smtp.url)
    notifications.add_customer(settings, "cus_ok", "Ok", "ok@example.com")
    notifications.add_customer(settings, "cus_rej", "Rejected", "reject@example.com")
    notifications.add_customer(settings, "cus_busy", "Busy", "busy@example.com")
    feed(settings, SERVICE, [processed("p_ok", "1.00", customer_id="cus_ok"),
                             processed("p_rej", "2.00", customer_id="cus_rej"),
                             processed("p_busy", "3.00", customer_id="cus_busy")])
    t0 = datetime.now(UTC)
    r = notifications.deliver_pending(settings, now=t0, max_attempts=2)
    assert (r.sent, r.failed, r.retried) == (1, 1, 1)
    (failed,) = notifications.list_notifications(settings, status="failed")
    assert failed.payment_id == "p_rej" and failed.reason_code == "smtp_rejected" and "550" in (failed.reason or "")
    (busy,) = notifications.list_notifications(settings, status="pending")
    assert busy.payment_id == "p_busy" and "451" in (busy.last_error or "")
    r = notifications.deliver_pending(settings, now=t0 + timedelta(seconds=3), max_attempts=2)
    assert r.failed == 1
    gave_up = {n.payment_id: n for n in notifications.list_notifications(settings, status="failed")}["p_busy"]
    assert gave_up.reason_code == "gave_up" and "after 2 attempts" in (gave_up.reason or "")
    assert [m.rcpt_tos for m in smtp.received()] == [["ok@example.com"]]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_authentication(settings: Settings) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cr:t")
        return AuthResult(success=ok, handled=False)

    sink = SmtpSink(authenticator=authenticator, auth_require_tls=False, auth_required=True).start()
    try:
        notifications.add_customer(settings, "cus_a", "Ann", "ann@example.com")
        feed(settings, SERVICE, [processed("p1", "1.00", customer_id="cus_a")])
        bad = settings.replace(smtp_url=f"smtp://mailer:wrong@127.0.0.1:{sink.port}")
        r = notifications.deliver_pending(bad)
        assert r.retried == 1 and sink.received() == []
        (pending,) = notifications.list_notifications(settings, status="pending")
        assert "credentials" in (pending.last_error or "")
        good = settings.replace(smtp_url=f"smtp://mailer:s3cr%3At@127.0.0.1:{sink.port}")
        assert notifications.deliver_pending(good, now=datetime.now(UTC) + timedelta(minutes=1)).sent == 1
        assert len(sink.received()) == 1
    finally:
        sink.stop()
