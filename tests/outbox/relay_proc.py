"""A relay process for the crash test: the real Relay over the real transport, with the window between
the broker's acknowledgement and the published mark widened (50 ms) and signalled by touching a file,
so the test can SIGKILL it exactly there as well as at random points."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.transport import open_transport
from payevents.transport.base import Delivery, Producer, Record, Transport


class _AckSignallingProducer:
    def __init__(self, inner: Producer, marker: Path) -> None:
        self.inner, self.marker = inner, marker

    def send(self, records: Sequence[Record]) -> list[Delivery]:
        deliveries = self.inner.send(records)
        self.marker.touch()  # acknowledged by the broker, not yet marked published
        time.sleep(0.05)
        return deliveries

    def close(self) -> None:
        self.inner.close()


class _Transport:
    def __init__(self, inner: Transport, marker: Path) -> None:
        self.inner, self.marker = inner, marker
        self.name = inner.name

    def producer(self) -> Producer:
        return _AckSignallingProducer(self.inner.producer(), self.marker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    settings = Settings.from_env()
    transport = _Transport(open_transport(settings), Path(sys.argv[1]))
    relay = Relay(settings, transport=transport, batch_size=40)  # type: ignore[arg-type]
    relay.run(threading.Event(), idle_sleep=0.002)


if __name__ == "__main__":
    main()
