"""The dashboard tells the truth (issue #13): labelled sliding-window rates, the journal newest first with
paging and one unit per column, a revenue chart with a time axis per currency, dead letters grouped by
record with a masked payload, and pages for legacy payments."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payevents.faces.web import create_app, data
from payevents.settings import Settings


@pytest.fixture(scope="module")
def client(processed: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(processed["settings"])) as c:
        yield c


def test_the_event_rate_is_a_labelled_sliding_window(client: TestClient, processed: dict[str, Any]) -> None:
    html = client.get("/").text
    card = re.search(r'<div class="card"[^>]*id="rate-card".*?</div></div>', html, re.S)
    assert card is not None, "no rate card"
    assert f'data-window-s="{int(data.RATE_WINDOW_S)}"' in card.group(0)
    assert "last 60 s" in card.group(0) and "sliding" in card.group(0)
    # the figure is the window's rate, computed from the same figures the page used
    figures = data.publish_figures(processed["settings"], now=datetime.now(UTC).timestamp() + 3600)
    assert figures.rate_recent == 0.0  # an hour later nothing is in the window, whatever the run's average
    assert figures.rate_overall > 0


def _journal_rows(html: str) -> list[dict[str, str]]:
    rows = re.findall(r'<tr class="line[^"]*"([^>]*)>', html)
    return [dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m)) for m in rows]


def test_the_journal_is_newest_first_with_paging_and_one_unit_per_column(client: TestClient) -> None:
    page = client.get("/ledger", params={"limit": 3})
    assert page.status_code == 200
    html = page.text
    heads = re.search(r'<table class="grid" id="journal">\s*<thead>(.*?)</thead>', html, re.S).group(1)  # type: ignore[union-attr]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", heads) == ["Posted", "Payment", "Account", "Currency", "Debit",
                                                           "Credit"]
    assert 'class="num">Debit' in heads and 'class="num">Credit' in heads
    rows = _journal_rows(html)
    entries = list(dict.fromkeys(r["entry"] for r in rows))
    assert len(entries) == 3
    posted = [r["posted"] for r in rows]
    assert posted == sorted(posted, reverse=True)
    cells = re.findall(r'<td class="num (debit|credit)">([^<]*)</td>', html)
    assert cells
    for _side, text in cells:
        assert text == "" or re.fullmatch(r"\d+(\.\d+)?", text), text  # major units, no currency code mixed in
    nxt = re.search(r'<a id="journal-older" href="/ledger\?limit=3&amp;starting_after=([^"]+)"', html)
    assert nxt is not None
    older = _journal_rows(client.get("/ledger", params={"limit": 3, "starting_after": nxt.group(1)}).text)
    assert older and not set(r["entry"] for r in older) & set(entries)
    assert max(r["posted"] for r in older) <= min(posted)
    # the trial balance: major units with the currency in every amount column
    usd = re.search(r'<table class="grid trial" data-currency="USD">(.*?)</table>', html, re.S).group(1)  # type: ignore[union-attr]
    assert "minor" not in usd
    assert '<td class="num total-debits">219.99</td>' in usd


def test_the_revenue_chart_has_a_time_axis_per_currency_and_shows_empty_days(client: TestClient) -> None:
    svg = client.get("/charts/revenue.svg", params={"days": 7}).text
    panels = re.findall(r'<g class="panel" data-currency="([A-Z]{3})"', svg)
    assert panels == ["JPY", "KWD", "USD"]
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=6 - i)).isoformat() for i in range(7)]
    for cur in panels:
        panel = re.search(rf'<g class="panel" data-currency="{cur}".*?</g>\s*<!-- end {cur} -->', svg, re.S)
        assert panel is not None
        slots = re.findall(r'data-day="(\d{4}-\d{2}-\d{2})" data-amount="([^"]*)"', panel.group(0))
        assert [d for d, _ in slots] == days  # every day of the window, in order
        assert [a for _, a in slots][:-1] == ["0"] * 6  # all revenue today; the other days shown as none
        assert panel.group(0).count('class="no-revenue"') == 6
        assert "axis-time" in panel.group(0) and cur in panel.group(0)
    assert f">{today.strftime('%b')} {today.day}<" in svg or f">{today.day} {today.strftime('%b')}<" in svg


def test_dead_letters_are_grouped_by_record_with_the_services_and_a_masked_payload(client: TestClient) -> None:
    html = client.get("/dead-letters").text
    records = re.findall(r'<tr class="record" data-record="([^"]+)" data-services="([^"]+)"', html)
    assert len(records) == 1  # one malformed record, rejected by the four services
    assert records[0][1].split(",") == ["analytics", "invoices", "ledger", "notifications"]
    assert '<pre class="payload">' in html and "oops" in html


def test_grouping_masks_card_numbers_in_the_payload() -> None:
    letter = {"originalTopic": "t", "originalPartition": 0, "originalOffset": 5, "service": "ledger",
              "reason": "bad", "failedAt": "2030-01-01T00:00:00+00:00", "eventType": None, "eventId": None,
              "key": "k", "partition": 0, "offset": 1,
              "value": json.dumps({"note": "card 4111 1111 1111 1111"}), "valueEncoding": "utf-8"}
    groups = data.group_dead_letters([letter, {**letter, "service": "invoices", "offset": 2}])
    assert len(groups) == 1 and [s["service"] for s in groups[0]["rejections"]] == ["invoices", "ledger"]
    assert "4111 1111 1111 1111" not in groups[0]["payload"] and "1111" in groups[0]["payload"]


def test_legacy_payments_have_a_page(legacy: dict[str, Any]) -> None:
    with TestClient(create_app(legacy["settings"])) as c:
        ledger_html = c.get("/ledger").text
        pid = legacy["payment_id"]
        assert f'href="/payments/{pid}"' in ledger_html
        page = c.get(f"/payments/{pid}")
        assert page.status_code == 200, page.text
        assert "legacy" in page.text and pid in page.text
        assert re.search(r'<td class="num (debit|credit)">120.00</td>', page.text)
        missing = c.get("/payments/PAY-NOBODY")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A legacy PAYMENT_PROCESSED envelope on the channel, applied by every consumer service."""
    from payevents.contracts.channel import topic_for
    from payevents.faces.demo import legacy_event
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import CONSUMER_SERVICES, load_service
    from payevents.store.db import dispose_engines
    from payevents.transport import open_transport
    from payevents.transport.base import Record

    settings = Settings(env="dev", data_dir=tmp_path_factory.mktemp("legacy") / "data")  # type: ignore[arg-type]
    event = legacy_event(2, "dev")
    pid = event["payload"]["paymentId"]
    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env)], settings.partitions)
        producer = transport.producer()
        producer.send([Record(topic_for(settings.env), value=json.dumps(event).encode(), key=pid.encode())])
        producer.close()
    finally:
        transport.close()
    for name in CONSUMER_SERVICES:
        runtime = ConsumerRuntime(settings, load_service(name))
        try:
            for _ in range(20):
                runtime.step()
                if runtime.stats.consumed >= 1 and runtime.stats.lag == 0:
                    break
        finally:
            runtime.close()
    assert Decimal(event["payload"]["amount"]["value"]) == Decimal("120.00")
    yield {"settings": settings, "payment_id": pid}
    dispose_engines()
