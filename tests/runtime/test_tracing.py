"""One trace per payment (issue #13): the W3C traceparent of complete() is stored with its outbox row, sent by
the relay as a record header and continued by all four services (a span per batch linked to each record's
context, the handler's work inside it) — followed with the SDK's in-memory exporter, on both transports."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind

from payevents.contracts import channel
from payevents.errors import ConfigError
from payevents.runtime import tracing
from payevents.runtime.audit import verify_engine
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.outbox import events_for_payment
from payevents.runtime.relay import Relay
from payevents.runtime.service import ServiceDef
from payevents.services import payments
from payevents.services.analytics.service import SERVICE as ANALYTICS
from payevents.services.invoices.service import SERVICE as INVOICES
from payevents.services.ledger.service import SERVICE as LEDGER
from payevents.services.notifications.service import SERVICE as NOTIFICATIONS
from payevents.services.payments import store as payments_store
from payevents.settings import Settings
from payevents.transport import open_transport


@dataclasses.dataclass(frozen=True)
class _FreshGroup(ServiceDef):
    group_id: str = ""

    @property
    def group(self) -> str:
        return self.group_id


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def _linked(span: ReadableSpan, trace_id: int) -> bool:
    return any(link.context.trace_id == trace_id for link in span.links)


@pytest.mark.timeout(180)
def test_one_payment_is_followed_from_complete_through_the_relay_to_all_four_services(
    transport_settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    s = transport_settings
    p = payments.create(s, customer_id="cus_trace", amount="42.00", currency="EUR", description="Traced",
                        idempotency_key=f"trace-{unique}")
    payments.authorize(s, p.payment_id)
    payments.capture(s, p.payment_id)
    spans.clear()
    payments.complete(s, p.payment_id)

    [command] = [sp for sp in spans.get_finished_spans() if sp.name == "payment complete"]
    trace_id = command.context.trace_id
    [create] = [sp for sp in spans.get_finished_spans() if sp.kind is SpanKind.PRODUCER]
    assert create.name == f"create {channel.topic_for(s.env)}"
    assert create.context.trace_id == trace_id and create.parent is not None
    assert create.parent.span_id == command.context.span_id

    # stored with the outbox row (a header, so inside the hash chain) ...
    processed = next(e for e in events_for_payment(payments_store.engine(s), p.payment_id)
                 if e.event_type == "PaymentProcessed")
    traceparent = processed.headers["traceparent"]
    assert traceparent.startswith(f"00-{_hex(trace_id, 32)}-{_hex(create.context.span_id, 16)}-")
    assert tracing.trace_id(traceparent) == _hex(trace_id, 32)
    assert verify_engine(payments_store.engine(s)).ok

    # ... sent by the relay as a record header, its send span linked to it
    with Relay(s) as relay:
        relay.ensure_topics()
        while relay.publish_pending():
            pass
    sends = [sp for sp in spans.get_finished_spans() if sp.name.startswith("send ")]
    assert sends and any(_linked(sp, trace_id) for sp in sends)
    assert all(sp.kind is SpanKind.PRODUCER for sp in sends)
    transport = open_transport(s)
    try:
        consumer = transport.consumer(f"trace-reader-{unique}", [channel.topic_for(s.env)], from_beginning=True)
        seen: list[dict[str, bytes]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(h.get("eventId") == processed.event_id.encode() for h in seen):
            seen += [dict(m.headers) for m in consumer.poll(100, 0.2)]
        consumer.close()
    finally:
        transport.close()
    [record] = [h for h in seen if h.get("eventId") == processed.event_id.encode()]
    assert record["traceparent"] == traceparent.encode()

    # ... and continued by every consumer: a process span per batch linked to it, the handler inside
    services = [_FreshGroup(**{f.name: getattr(svc, f.name) for f in dataclasses.fields(ServiceDef)},
                            group_id=f"{svc.group}.{unique}") for svc in (LEDGER, INVOICES, ANALYTICS, NOTIFICATIONS)]
    runtimes = [ConsumerRuntime(s, svc, max_batch=200, poll_timeout=0.1) for svc in services]
    try:
        deadline = time.monotonic() + 60
        done: set[str] = set()
        while time.monotonic() < deadline and len(done) < 4:
            for rt in runtimes:
                rt.step()
            done = {sp.attributes["payevents.service"] for sp in spans.get_finished_spans()  # type: ignore[misc]
                    if sp.kind is SpanKind.CONSUMER and _linked(sp, trace_id)}
    finally:
        for rt in runtimes:
            rt.close()
    assert done == {"ledger", "invoices", "analytics", "notifications"}
    finished = spans.get_finished_spans()
    for svc in done:
        [batch] = [sp for sp in finished if sp.kind is SpanKind.CONSUMER and _linked(sp, trace_id)
                   and sp.attributes["payevents.service"] == svc]  # type: ignore[index]
        assert batch.name == f"process {channel.topic_for(s.env)}"
        assert batch.attributes["messaging.operation.type"] == "process"  # type: ignore[index]
        assert batch.attributes["messaging.consumer.group.name"] == f"payevents.{svc}.{unique}"  # type: ignore[index]
        link = next(lk for lk in batch.links if lk.context.trace_id == trace_id)
        assert link.context.span_id == create.context.span_id
        handlers = [sp for sp in finished if sp.name == f"{svc} handle" and sp.parent is not None
                    and sp.parent.span_id == batch.context.span_id]
        assert handlers, f"{svc}: no handler span inside its batch span"


def test_tracing_off_stores_no_traceparent_and_creates_no_spans(settings: Settings) -> None:
    assert not tracing.enabled()
    p = payments.create(settings, customer_id="cus_plain", amount="1.00", currency="EUR", description="Plain")
    [event] = events_for_payment(payments_store.engine(settings), p.payment_id)
    assert "traceparent" not in event.headers
    with tracing.process_span("t", "g", "s", []) as span, tracing.handler_span("s", 1) as inner:
        assert span is None and inner is None


def test_configure_reads_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracing, "_configured", False)
    assert tracing.configure("ledger") is False and not tracing.enabled()
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure("ledger") is False
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    assert tracing.configure("ledger") is False
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "no-such-exporter")
    with pytest.raises(ConfigError, match="no trace exporter 'no-such-exporter'"):
        tracing.configure("ledger")
    assert not tracing.enabled()
    monkeypatch.setattr(tracing, "_configured", True)


def test_otel_variables_turn_tracing_on_and_spans_reach_the_exporter(tmp_path: Path) -> None:
    """In a process of its own (the SDK's provider is global): OTEL_TRACES_EXPORTER=console turns tracing on,
    OTEL_SERVICE_NAME names the service, and a completed payment's spans reach the exporter."""
    code = (
        "from payevents.runtime import tracing\n"
        "from payevents.services import payments\n"
        "from payevents.settings import Settings\n"
        "assert tracing.configure('payments')\n"
        f"s = Settings(env='dev', data_dir={str(tmp_path)!r})\n"
        "p = payments.create(s, customer_id='cus_env', amount='5.00', currency='EUR', description='Env')\n"
        "payments.authorize(s, p.payment_id); payments.capture(s, p.payment_id); payments.complete(s, p.payment_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="payevents-test", OTEL_BSP_SCHEDULE_DELAY="10")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"name": "payment complete"' in out.stdout and '"service.name": "payevents-test"' in out.stdout
    assert '"name": "create payments.dev.events"' in out.stdout


def test_trace_id_of_a_traceparent() -> None:
    assert tracing.trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
    assert tracing.trace_id("garbage") is None
    assert tracing.trace_id(None) is None


def test_the_payment_page_shows_its_trace_id(settings: Settings, spans: InMemorySpanExporter) -> None:
    from fastapi.testclient import TestClient

    from payevents.faces.web import create_app

    p = payments.create(settings, customer_id="cus_page", amount="9.99", currency="EUR", description="Page")
    for step in (payments.authorize, payments.capture, payments.complete):
        step(settings, p.payment_id)
    [command] = [sp for sp in spans.get_finished_spans() if sp.name == "payment complete"]
    trace_id = _hex(command.context.trace_id, 32)
    with TestClient(create_app(settings)) as client:
        page = client.get(f"/payments/{p.payment_id}")
        timeline = client.get(f"/api/payments/{p.payment_id}/timeline").json()
    assert page.status_code == 200
    assert f'<code id="trace-id">{trace_id}</code>' in page.text
    processed = next(e for e in timeline if e["event_type"] == "PaymentProcessed")
    assert tracing.trace_id(processed["headers"]["traceparent"]) == trace_id


class _CardLikeIds(RandomIdGenerator):
    """Span ids that are 16 decimal digits passing Luhn's check (a random span id is one about once in 20,000), and
    random trace ids — or, ``trace_too``, a trace id whose digits hold such a run as well."""

    def __init__(self, trace_too: bool = False) -> None:
        self.trace_too = trace_too

    def generate_span_id(self) -> int:
        return 0x4111111111111111

    def generate_trace_id(self) -> int:
        return 0xABCD4111111111111111ABCDABCDABCD if self.trace_too else super().generate_trace_id()


@pytest.mark.parametrize("trace_too", [False, True], ids=["span id", "trace id"])
def test_a_trace_context_whose_digits_look_like_a_card_number_fails_no_payment(
    settings: Settings, trace_too: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A trace or span id is random hex: about one in 20,000 is 16 decimal digits passing Luhn's check, and the card
    guard refuses it wherever it would be stored (a payment command failed with "headers.traceparent: looks like a
    card number"). Telemetry never fails a payment: the event is stored without that trace context, said in a
    warning that shows no digits, and card data still enters no store."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_CardLikeIds(trace_too))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        p = payments.create(settings, customer_id="cus_luhn", amount="5.00", currency="EUR", description="Luhn")
        for step in (payments.authorize, payments.capture, payments.complete):
            step(settings, p.payment_id)
    finally:
        tracing.install(None)
        provider.shutdown()
    events = events_for_payment(payments_store.engine(settings), p.payment_id)
    assert [e.event_type for e in events][-1] == "PaymentProcessed"
    for event in events:
        assert "traceparent" not in event.headers and "tracestate" not in event.headers
        assert "4111111111111111" not in str(event.headers)
    assert verify_engine(payments_store.engine(settings)).ok
    warned = [r.getMessage() for r in caplog.records if "trace context" in r.getMessage()]
    assert warned and not any("4111" in m for m in warned)
