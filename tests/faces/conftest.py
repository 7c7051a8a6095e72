"""Fixtures of the faces tests: the AsyncAPI validator (node + @asyncapi/parser), Chromium via Playwright,
and a live uvicorn server on a free loopback port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_rule import missing

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tools" / "asyncapi" / "validate.mjs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def asyncapi_validate() -> Callable[..., tuple[int, Any]]:
    """Runs tools/asyncapi/validate.mjs (the real @asyncapi/parser) on a document: (exit code, report)."""
    node = shutil.which("node")
    if node is None:
        missing("node (for the AsyncAPI validator)")
    if not (ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "parser").is_dir():
        missing("@asyncapi/parser in tools/asyncapi (run: make asyncapi-deps)")

    def run(document: Any, many: bool = False) -> tuple[int, Any]:
        """``document``: JSON text or a JSON-ready value; ``many``: a list of documents, one node process."""
        text = document if isinstance(document, str) else json.dumps(document, default=str)
        argv = [node, str(VALIDATOR), *(["--many"] if many else []), "-"]
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=120, check=False)
        if not proc.stdout.strip():
            raise AssertionError(f"validator printed nothing (exit {proc.returncode}): {proc.stderr}")
        return proc.returncode, json.loads(proc.stdout)

    return run


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an ASGI app in a thread on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        missing("chromium (/usr/bin/chromium; apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


# -- a platform with a few payments driven through payments + relay + the four consumer runtimes -----------


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Embedded broker + SQLite: customers, invoices, payments (full, partial, declined, JPY/USD/KWD), one
    malformed record on the channel; relay and every consumer run until the channel is drained."""
    from payevents.contracts.channel import topic_for
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.runtime.relay import Relay
    from payevents.services import CONSUMER_SERVICES, invoices, load_service, notifications, payments
    from payevents.services.payments import PaymentSpec
    from payevents.settings import Settings
    from payevents.store.db import dispose_engines
    from payevents.transport import open_transport
    from payevents.transport.base import Record

    settings = Settings(env="dev", data_dir=tmp_path_factory.mktemp("faces") / "data")  # type: ignore[arg-type]
    notifications.add_customer(settings, "cus_ada", "Ada Lovelace", "ada@example.com")
    notifications.add_customer(settings, "cus_jp", "Hiro Tanaka", "hiro@example.com", "ja_JP")
    inv_full = invoices.create(settings, customer_id="cus_ada", amount_due="120.00", currency="USD",
                               due_date="2030-01-31").invoice.invoice_id
    inv_part = invoices.create(settings, customer_id="cus_ada", amount_due="500.00", currency="USD",
                               due_date="2030-01-31").invoice.invoice_id
    specs = [
        PaymentSpec(customer_id="cus_ada", amount="120.00", currency="USD", description="Order 1",
                    invoice_id=inv_full, order_id="ORD-1", idempotency_key="faces-1"),
        PaymentSpec(customer_id="cus_ada", amount="99.99", currency="USD", description="Order 2",
                    invoice_id=inv_part, idempotency_key="faces-2"),
        PaymentSpec(customer_id="cus_jp", amount="1500", currency="JPY", description="Order 3",
                    idempotency_key="faces-3"),
        PaymentSpec(customer_id="cus_ada", amount="1.250", currency="KWD", description="Order 4",
                    idempotency_key="faces-4"),
        PaymentSpec(customer_id="cus_ada", amount="10.00", currency="USD", description="Order 5",
                    decline="card_declined", idempotency_key="faces-5"),
    ]
    done = payments.process_payments(settings, specs)
    with Relay(settings) as relay:
        relay.ensure_topics()
        published = relay.publish_pending()
    transport = open_transport(settings)
    try:
        producer = transport.producer()
        producer.send([Record(topic_for(settings.env), value=b'{"eventType": "PaymentProcessed", "oops"',
                              key=b"pay_broken")])
        producer.close()
    finally:
        transport.close()
    for name in CONSUMER_SERVICES:
        runtime = ConsumerRuntime(settings, load_service(name))
        try:
            for _ in range(50):
                runtime.step()
                if runtime.stats.consumed >= published + 1 and runtime.stats.lag == 0:
                    break
        finally:
            runtime.close()
    notifications.deliver_pending(settings)
    yield {"settings": settings, "payments": done, "published": published, "invoices": (inv_full, inv_part)}
    dispose_engines()
