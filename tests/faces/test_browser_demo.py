"""The dashboard in Chromium after `payevents demo`: it shows the demo's own figures."""

from __future__ import annotations

from typing import Any

import pytest

from card_leak import shows_test_card
from faces.conftest import LiveServer
from payevents.faces.demo import run_demo
from payevents.faces.web import create_app
from payevents.settings import Settings

pytestmark = pytest.mark.browser


def test_the_dashboard_shows_the_demos_figures(page: Any, settings: Settings) -> None:
    r = run_demo(settings, payments=12, seed=5)
    with LiveServer(create_app(settings)) as server:
        page.goto(server.url + "/")
        assert page.locator("#payments-total").inner_text() == str(r.payments)
        assert page.locator("#events-published").inner_text() == str(r.events)
        assert page.locator("#ledger-status").inner_text() == "balanced"
        # four malformed records, dead-lettered by each of the four services: counted once per record
        assert page.locator("#dead-letter-count").inner_text() == str(len(r.dead_letters))
        for service in ("ledger", "invoices", "analytics", "notifications"):
            assert page.locator(f'#lag tr[data-service="{service}"] td.lag').inner_text() == "0"
        bars = page.locator("#delay-histogram rect.bar")
        assert sum(int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())) == r.events
        for row in r.revenue:  # the revenue table per currency matches the demo's analytics report
            cell = page.locator(f'#revenue-totals tr[data-currency="{row["currency"]}"] td').nth(2)
            assert cell.inner_text().replace(",", "") == row["amount"]
        page.goto(server.url + "/dead-letters")
        body = page.locator("body").inner_text()
        assert "not valid JSON" in body and "'usd' is not an ISO 4217 code" in body and not shows_test_card(body)
        records = page.locator("#dead-letters tr.record")
        assert records.count() == len(r.dead_letters)
        services = records.evaluate_all("rs => rs.map(r => r.dataset.services)")
        assert set(services) == {"analytics,invoices,ledger,notifications"}
