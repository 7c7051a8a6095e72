"""Nothing hidden in the catalog (issue #11): the legacy PAYMENT_PROCESSED envelope (read-only, how it is
normalized) and the dead-letter channel with its headers, in the AsyncAPI document and on the site."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payevents.contracts import channel
from payevents.contracts.events import EVENT_TYPES
from payevents.contracts.legacy import LEGACY_EVENT_TYPE
from payevents.faces.catalog import asyncapi_document, build_site
from payevents.faces.catalog.jsonfmt import dumps
from payevents.runtime.deadletter import DLQ_HEADERS
from payevents.settings import Settings

Validate = Callable[..., tuple[int, Any]]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_asyncapi_shows_the_legacy_envelope_read_only_and_the_dead_letter_channel(
        settings: Settings, asyncapi_validate: Validate) -> None:
    doc = asyncapi_document(settings)
    code, report = asyncapi_validate(dumps(doc))
    assert code == 0 and report["valid"], report["errors"]
    channels = {c["address"]: c for c in report["channels"]}
    assert set(channels) == {"payments.{env}.events", "payments.{env}.events.dlq"}
    main, dlq = channels["payments.{env}.events"], channels["payments.{env}.events.dlq"]
    assert main["messages"] == [*EVENT_TYPES, LEGACY_EVENT_TYPE]  # it may be on the channel: consumers read it
    assert [p["id"] for p in dlq["parameters"]] == ["env"] and dlq["kafka"]["partitions"] == settings.partitions

    messages = {m["name"]: m for m in report["messages"]}
    legacy = messages[LEGACY_EVENT_TYPE]
    assert legacy["payloadProperties"] == ["eventType", "timestamp", "version", "payload", "metadata"]
    assert legacy["kafka"]["key"]["type"] == "string"
    legacy_doc = doc["components"]["messages"][LEGACY_EVENT_TYPE]
    assert "read-only" in legacy_doc["summary"].lower() and "PaymentProcessed 1.0.0" in legacy_doc["summary"]
    assert "uuid5" in legacy_doc["description"] and "gatewayReference" in legacy_doc["description"]
    assert legacy_doc["examples"][0]["payload"]["eventType"] == LEGACY_EVENT_TYPE

    dead = messages["DeadLetter"]
    assert set(dead["headerProperties"]) >= {*DLQ_HEADERS, *channel.AUDIT_HEADERS}
    assert set(doc["components"]["schemas"]["DeadLetterHeaders"]["required"]) == set(DLQ_HEADERS)
    assert dlq["messages"] == ["DeadLetter"]

    ops = {o["id"]: o for o in report["operations"]}
    assert LEGACY_EVENT_TYPE not in ops["publishPaymentEvents"]["messages"]  # never emitted
    receivers = [o for o in ops.values() if o["action"] == "receive" and o["channels"] == ["payments.{env}.events"]]
    assert receivers and all(LEGACY_EVENT_TYPE in o["messages"] for o in receivers)
    [dead_letter_op] = [o for o in ops.values() if o["channels"] == ["payments.{env}.events.dlq"]]
    assert dead_letter_op["action"] == "send" and dead_letter_op["messages"] == ["DeadLetter"]


def test_the_site_shows_the_legacy_envelope_and_the_dead_letter_headers(tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "site"
    files = {p.relative_to(out).as_posix() for p in build_site(out, settings)}
    assert {"legacy/PAYMENT_PROCESSED/1.0.html", "legacy/PAYMENT_PROCESSED/1.0.schema.json"} <= files
    page = text_of((out / "legacy/PAYMENT_PROCESSED/1.0.html").read_text())
    assert "read-only" in page.lower() and "never emitted" in page.lower()
    assert "normalized to PaymentProcessed 1.0.0" in page and "uuid5" in page
    assert "transactionDetails.processorId" in page  # the mapping rules, from the upcaster's own docs
    normalized = html.unescape((out / "legacy/PAYMENT_PROCESSED/1.0.html").read_text())
    assert '"eventType": "PaymentProcessed"' in normalized and '"gatewayReference": "stripe_123xyz"' in normalized
    schema = json.loads((out / "legacy/PAYMENT_PROCESSED/1.0.schema.json").read_text())
    assert schema["x-legacy"] is True
    index = text_of((out / "index.html").read_text())
    assert "PAYMENT_PROCESSED" in index and "read-only" in index.lower()
    ch = (out / "channel.html").read_text()
    assert 'id="dead-letter-headers"' in ch
    dead = text_of(ch.split('id="dead-letter-headers"', 1)[1].split("</table>", 1)[0])
    for h in DLQ_HEADERS:
        assert h in dead
    assert "payments.{env}.events.dlq" in text_of(ch) and "legacy/PAYMENT_PROCESSED/1.0.html" in ch
