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

from conftest import missing

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
