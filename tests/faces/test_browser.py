"""The dashboard and the catalog in headless Chromium (Debian's), against uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from faces.conftest import LiveServer
from payevents.faces.web import create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(processed: dict[str, Any]) -> Iterator[LiveServer]:
    with LiveServer(create_app(processed["settings"])) as s:
        yield s


def test_dashboard_shows_the_figures_and_both_charts(page: Any, server: LiveServer, processed: dict[str, Any]) -> None:
    page.goto(server.url + "/")
    assert page.locator("#payments-total").inner_text() == str(len(processed["payments"]))
    assert page.locator("#events-published").inner_text() == str(processed["published"])
    assert page.locator("#ledger-status").inner_text() == "balanced"
    assert int(page.locator("#dead-letter-count").inner_text()) >= 1
    assert float(page.locator("#events-rate-run").inner_text()) > 0  # the run average; #events-rate: last 60 s
    assert "last 60 s" in page.locator("#rate-card").inner_text()
    # lag per service: every group drained the channel
    for service in ("ledger", "invoices", "analytics", "notifications"):
        assert page.locator(f'#lag tr[data-service="{service}"] td.lag').inner_text() == "0"
    # the latency histogram: one bar per bucket, counts adding up to the published events, the 5 s line
    bars = page.locator("#delay-histogram rect.bar")
    counts = [int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())]
    assert sum(counts) == processed["published"]
    assert page.locator("#sla-line").count() == 1
    assert page.locator("#delay-histogram text.sla-label").text_content() == "5 s rule"
    box = page.locator("#delay-histogram").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    # the revenue chart image is loaded and drawn
    chart = page.locator("#revenue-chart")
    chart.wait_for()
    page.wait_for_function("document.querySelector('#revenue-chart').complete")
    assert page.evaluate("document.querySelector('#revenue-chart').naturalWidth") > 100
    assert page.locator('#revenue-totals tr[data-currency="USD"] td').nth(2).inner_text() == "219.99"
    assert page.locator('#revenue-totals tr[data-currency="JPY"] td').nth(2).inner_text() == "1500"


def test_a_payments_timeline_lists_its_events_in_order(page: Any, server: LiveServer,
                                                       processed: dict[str, Any]) -> None:
    payment = processed["payments"][0]
    page.goto(server.url + "/payments")
    page.click(f'a[href="/payments/{payment.payment_id}"]')
    page.wait_for_url(f"**/payments/{payment.payment_id}")
    rows = page.locator("#timeline tr.event")
    types = [rows.nth(i).get_attribute("data-event-type") for i in range(rows.count())]
    assert types == ["PaymentInitiated", "PaymentAuthorized", "PaymentCaptured", "PaymentProcessed"]
    seqs = [int(rows.nth(i).get_attribute("data-seq")) for i in range(rows.count())]
    assert seqs == sorted(seqs)
    correlation = page.locator('#timeline code[data-header="correlationId"]').all_inner_texts()
    assert correlation == [payment.correlation_id] * 4
    assert page.locator('#timeline code[data-header="environment"]').all_inner_texts() == ["dev"] * 4
    assert page.locator('#timeline code[data-header="source"]').all_inner_texts() == ["payments"] * 4

    declined = processed["payments"][-1]
    page.goto(f"{server.url}/payments/{declined.payment_id}")
    rows = page.locator("#timeline tr.event")
    assert [rows.nth(i).get_attribute("data-event-type") for i in range(rows.count())] == [
        "PaymentInitiated", "PaymentFailed"]


def test_ledger_invoices_notifications_and_dead_letters_pages(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/ledger")
    assert page.locator("#trial-status").inner_text() == "balanced"
    assert page.locator("table.trial").count() == 3
    page.goto(server.url + "/invoices")
    statuses = sorted(page.locator("#invoices tr[data-status]").evaluate_all("rs => rs.map(r => r.dataset.status)"))
    assert statuses == ["Paid", "Partially Paid"]
    page.goto(server.url + "/notifications")
    assert page.locator('#notifications tr[data-status="sent"]').count() == 4
    page.goto(server.url + "/dead-letters")
    reasons = page.locator("#dead-letters .reason").all_inner_texts()  # one per rejecting service
    assert reasons and all(r.strip() for r in reasons)


def test_catalog_pages_in_the_browser(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/catalog")
    page.click("text=PaymentProcessed")
    assert page.locator("#property-count").inner_text() == "20 properties"
    assert page.locator("#schema-table tbody tr").count() == 20
    page.click("header >> text=Channel")
    assert page.locator("#parameters td.options").inner_text() == "dev, sit, prod"
    cells = page.locator("#parameters tbody tr td").all_inner_texts()
    assert cells[0] == "env" and cells[3] == "N/A"
    assert page.locator("#address").inner_text() == "payments.{env}.events"


def test_the_api_docs_render_without_the_network(page: Any, server: LiveServer) -> None:
    """Swagger UI draws the payevents API with every request to another host refused."""
    outside: list[str] = []

    def only_local(route: Any) -> None:
        url = route.request.url
        if url.startswith(server.url):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(server.url + "/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "payevents" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-tag", has_text="payments").first.wait_for()
    assert page.locator(".opblock-summary-path", has_text="/api/payments").count() >= 1
    assert page.locator("button.authorize").count() == 1
    assert outside == []


def test_numbers_are_right_aligned(page: Any, server: LiveServer) -> None:
    for path, selector in (("/ledger", "#journal td.num"), ("/ledger", "table.trial td.num"),
                           ("/revenue", "#revenue-totals td.num"), ("/", "#revenue-totals td.num")):
        page.goto(server.url + path)
        aligns = page.locator(selector).evaluate_all("cs => cs.map(c => getComputedStyle(c).textAlign)")
        assert aligns and set(aligns) == {"right"}, (path, selector, set(aligns))
