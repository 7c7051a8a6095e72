"""The generated catalog site and the CLI that writes it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payevents.contracts.events import EVENT_MODELS
from payevents.contracts.schema import load_schema
from payevents.faces.catalog import SchemaSource, build_catalog, build_site
from payevents.faces.cli import app
from payevents.services import CONSUMER_SERVICES, load_service
from payevents.settings import Settings


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_site_pages_from_the_code(tmp_path: Path, settings: Settings) -> None:
    settings = settings.replace(partitions=12)
    out = tmp_path / "site"
    files = build_site(out, settings)
    assert {p.relative_to(out).as_posix() for p in files} >= {
        "index.html",
        "channel.html",
        "asyncapi.json",
        "static/catalog.css",
        *(f"events/{t}/{v}.html" for t, v in EVENT_MODELS),
        *(f"events/{t}/{v}.schema.json" for t, v in EVENT_MODELS),
        *(f"events/{t}/index.html" for t, _ in EVENT_MODELS),
    }
    channel = text_of((out / "channel.html").read_text())
    assert "payments.{env}.events" in channel
    assert "env Environment to use for payment events dev, sit, prod N/A" in channel
    assert "Protocol kafka" in channel and "Partitions 12" in channel
    assert "key = data.paymentId" in channel

    page = (out / "events/PaymentProcessed/1.0.0.html").read_text()
    assert "20 properties" in text_of(page)
    assert "constant: PaymentProcessed" in text_of(page)
    assert "Match pattern: ^\\d+\\.\\d+\\.\\d+$" in text_of(page)
    assert json.loads((out / "events/PaymentProcessed/1.0.0.schema.json").read_text()) == load_schema(
        "PaymentProcessed", "1.0.0"
    )
    assert "within 5 seconds" in text_of(page)
    # the page's example validates against the contracts
    example = re.search(r'<pre class="code" id="example"><code>(.*?)</code>', page, re.S)
    assert example is not None
    from html import unescape

    from payevents.contracts.codec import decode_event

    decoded = decode_event(unescape(example.group(1)).encode())
    assert decoded.event_type == "PaymentProcessed" and str(decoded.event.data.amount.value) == "99.99"


def test_producers_and_consumers_come_from_the_service_registrations(tmp_path: Path, settings: Settings) -> None:
    catalog = build_catalog(settings)
    processed = catalog.event("PaymentProcessed")
    assert processed.producers == ("payments",)
    expected = {n for n in CONSUMER_SERVICES if "PaymentProcessed" in load_service(n).handlers}
    assert {c.service for c in processed.consumers} == expected == set(CONSUMER_SERVICES)
    out = tmp_path / "site"
    build_site(out, settings)
    page = text_of((out / "events/PaymentProcessed/1.0.0.html").read_text())
    for name in CONSUMER_SERVICES:
        svc = load_service(name)
        assert f"payevents.{name}" in page
        assert svc.downstream_action and svc.downstream_action in page


def test_history_and_diff_pages_with_a_synthetic_2_0_0(tmp_path: Path, settings: Settings) -> None:
    v2 = copy.deepcopy(load_schema("PaymentProcessed", "1.0.0"))
    del v2["properties"]["data"]["properties"]["gatewayReference"]
    v2["properties"]["data"]["required"].remove("gatewayReference")
    v2["properties"]["data"]["properties"]["channel"] = {"type": "string"}
    source = SchemaSource.from_contracts().with_schema("PaymentProcessed", "2.0.0", v2)
    out = tmp_path / "site"
    build_site(out, settings, source)
    history = text_of((out / "events/PaymentProcessed/index.html").read_text())
    assert "2.0.0 latest" in history and "1 breaking of 2 changes" in history
    diff = text_of((out / "events/PaymentProcessed/diff-1.0.0-2.0.0.html").read_text())
    assert "Breaking: 1 of 2 changes" in diff
    assert "data.gatewayReference removed yes" in diff
    assert "data.channel added no" in diff
    latest = text_of((out / "events/PaymentProcessed/2.0.0.html").read_text())
    assert "20 properties" in latest  # one removed, one added
    old = text_of((out / "events/PaymentProcessed/1.0.0.html").read_text())
    assert "superseded by 2.0.0" in old


def test_cli_catalog_build_and_asyncapi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYEVENTS_ENV", raising=False)
    monkeypatch.setenv("PAYEVENTS_PARTITIONS", "3")
    runner = CliRunner()
    result = runner.invoke(app, ["catalog", "build", "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert "Partitions 3" in text_of((tmp_path / "site" / "channel.html").read_text())
    result = runner.invoke(app, ["catalog", "asyncapi", "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    result = runner.invoke(app, ["catalog", "asyncapi"])
    assert result.exit_code == 0 and json.loads(result.stdout)["channels"]["paymentEvents"]["bindings"]["kafka"][
        "partitions"
    ] == 3
