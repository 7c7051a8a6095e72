"""OpenTelemetry tracing, following the messaging semantic conventions: one trace per payment.

* A payment command (``payments complete`` …) runs in a span ``payment <command>``; each event it appends to
  the outbox gets a ``create payments.{env}.events`` span (kind PRODUCER) whose W3C ``traceparent`` is stored
  with the outbox row as the header ``traceparent`` (see :func:`creation_headers`).
* The relay sends the stored headers as record headers, so the record carries its creation context; its
  ``send`` span (PRODUCER, one per batch) links to each record's context.
* Every consumer runs a ``process`` span (CONSUMER, one per batch) linking to each record's context, with the
  handler's work inside it (``<service> handle``).

Tracing is off unless :func:`configure` finds the standard ``OTEL_*`` variables (or a real tracer provider
was installed globally, e.g. by ``opentelemetry-instrument``) or a test calls :func:`install`. While it is
off every helper here returns at once (no span objects, no header parsing): the hot paths pay one attribute
check per batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Tracer

from payevents.contracts.cardguard import contains_card_number
from payevents.errors import ConfigError

log = logging.getLogger("payevents.tracing")

#: the W3C trace-context header (stored with the outbox row, sent as a record header)
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
SYSTEM: Final = "kafka"  # messaging.system: the channel's protocol (the embedded log mimics it)
_SCOPE: Final = "payevents"

#: the tracer while tracing is on; None: off
_tracer: Tracer | None = None
_configured = False
_NULL: Final = contextlib.nullcontext()

#: variables that ask for traces (besides a global SDK provider installed by someone else)
_WANT_VARS: Final = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def enabled() -> bool:
    return _tracer is not None


def install(provider: Any) -> None:
    """Trace with ``provider`` (an SDK TracerProvider); None turns tracing off. For tests and embedding apps."""
    global _tracer, _configured
    _configured = True
    _tracer = None if provider is None else provider.get_tracer(_SCOPE)


def configure(service_name: str | None = None) -> bool:
    """Turn tracing on from the standard ``OTEL_*`` variables, once per process; True when on.

    On when ``OTEL_SDK_DISABLED`` is not true and either a real tracer provider is installed globally or
    ``OTEL_TRACES_EXPORTER`` (not ``none``) or an OTLP endpoint is set. The SDK then reads the rest itself:
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (default service name ``payevents-<service>``),
    ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, the exporter's ``OTEL_EXPORTER_*``.
    ``OTEL_TRACES_EXPORTER`` names exporters by entry point (``console``; ``otlp`` with the optional
    ``opentelemetry-exporter-otlp`` package), comma-separated; default ``otlp``; one that is not installed is a
    :class:`~payevents.errors.ConfigError` (tracing stays off)."""
    global _configured, _tracer
    if _configured:
        return _tracer is not None
    _configured = True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        _tracer = current.get_tracer(_SCOPE)  # someone (opentelemetry-instrument, the app) set up the SDK
        return True
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not any(os.environ.get(v, "").strip() for v in _WANT_VARS) or exporters == "none":
        return False
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": f"payevents-{service_name or 'cli'}"}
    provider = TracerProvider(resource=Resource.create(attrs))
    for name in [n.strip() for n in (exporters or "otlp").split(",") if n.strip() and n.strip() != "none"]:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} installed"
                              + (" (pip install opentelemetry-exporter-otlp)" if name.startswith("otlp") else ""))
        provider.add_span_processor(BatchSpanProcessor(next(iter(found)).load()()))
    trace.set_tracer_provider(provider)  # flushed at exit by the SDK's atexit hook
    _tracer = provider.get_tracer(_SCOPE)
    return True


# -- producing --------------------------------------------------------------------------------------------


def _messaging(operation: str, topic: str, kind: str, **more: Any) -> dict[str, Any]:
    return {"messaging.system": SYSTEM, "messaging.operation.name": operation, "messaging.operation.type": kind,
            "messaging.destination.name": topic, **more}


def command_span(name: str, payment_id: str | None = None) -> contextlib.AbstractContextManager[Any]:
    """The span of a payment command (``payment complete``): the trace the payment's events belong to."""
    if _tracer is None:
        return _NULL
    attrs = {} if payment_id is None else {"payevents.payment.id": payment_id}
    return _tracer.start_as_current_span(f"payment {name}", kind=SpanKind.INTERNAL, attributes=attrs)


def creation_headers(topic: str, event_id: str, headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` plus the creation context of one event (a ``create`` span, child of the current span):
    what the outbox stores. Unchanged while tracing is off or when the caller already set a traceparent.

    A trace or span id is random hex, and about one in 20,000 is a run of decimal digits that passes Luhn's check:
    the card guard refuses it wherever it is stored (the outbox's headers). Telemetry never fails a payment, so
    such a context is left out (the event is stored untraced) and a warning says so without the value."""
    if _tracer is None or TRACEPARENT in headers:
        return headers
    with _tracer.start_as_current_span(f"create {topic}", kind=SpanKind.PRODUCER,
                                       attributes=_messaging("create", topic, "create",
                                                             **{"messaging.message.id": event_id})):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    if any(contains_card_number(carrier.get(name, "")) for name in (TRACEPARENT, TRACESTATE)):
        log.warning("event %s is stored without its trace context: its trace or span id reads as a card number"
                    " (value not shown)", event_id, extra={"eventId": event_id})
        return headers
    out = dict(headers)
    for name in (TRACEPARENT, TRACESTATE):
        if carrier.get(name):
            out[name] = carrier[name]
    return out


def _links(contexts: Iterable[Mapping[str, str]]) -> list[Link]:
    links = []
    for carrier in contexts:
        if TRACEPARENT not in carrier:
            continue
        ctx = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if ctx.is_valid:
            links.append(Link(ctx))
    return links


def send_span(topic: str, records: Iterable[Any]) -> contextlib.AbstractContextManager[Any]:
    """The relay's ``send`` span for one batch of records, linked to each record's creation context."""
    if _tracer is None:
        return _NULL
    batch = list(records)
    links = _links(_header_map(r.headers) for r in batch)
    return _tracer.start_as_current_span(
        f"send {topic}", kind=SpanKind.PRODUCER, links=links,
        attributes=_messaging("send", topic, "send", **{"messaging.batch.message_count": len(batch)}))


# -- consuming --------------------------------------------------------------------------------------------


def _header_map(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        if name in (TRACEPARENT, TRACESTATE) and value is not None:
            out[name] = value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)
    return out


@contextlib.contextmanager
def _process(topic: str, group: str, service: str, messages: Any) -> Iterator[Any]:
    assert _tracer is not None
    links = _links(_header_map(m.headers) for m in messages)
    attrs = _messaging("process", topic, "process", **{"messaging.batch.message_count": len(messages),
                                                        "messaging.consumer.group.name": group,
                                                        "payevents.service": service})
    with _tracer.start_as_current_span(f"process {topic}", kind=SpanKind.CONSUMER, links=links,
                                       attributes=attrs) as span:
        yield span


def process_span(topic: str, group: str, service: str, messages: Any) -> contextlib.AbstractContextManager[Any]:
    """A consumer's span for one batch (kind CONSUMER), linked to each record's creation context."""
    if _tracer is None:
        return _NULL
    return _process(topic, group, service, messages)


def handler_span(service: str, count: int) -> contextlib.AbstractContextManager[Any]:
    """The handler's work for ``count`` events, inside the batch's span."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(f"{service} handle", kind=SpanKind.INTERNAL,
                                         attributes={"payevents.service": service,
                                                     "messaging.batch.message_count": count})


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C traceparent (``00-<trace id>-<span id>-<flags>``); None if none."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or set(parts[1]) == {"0"}:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()
