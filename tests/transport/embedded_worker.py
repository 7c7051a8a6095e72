"""A consumer-group member in its own process, for the embedded multi-process tests.

usage: embedded_worker.py DB TOPIC GROUP OUT STOP
Consumes and commits after every batch until STOP exists and nothing more arrives; then writes the
(partition, offset, value) it saw and the partitions it held to OUT as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from payevents.transport.embedded import EmbeddedTransport


def main() -> None:
    db, topic, group, out, stop = sys.argv[1:6]
    transport = EmbeddedTransport(db, session_timeout=60)
    consumer = transport.consumer(group, [topic])
    seen: list[tuple[int, int, str]] = []
    print("ready", flush=True)
    while True:
        msgs = consumer.poll(200, 0.1)
        if msgs:
            seen.extend((m.partition, m.offset, (m.value or b"").decode()) for m in msgs)
            offsets: dict[tuple[str, int], int] = {}
            for m in msgs:
                offsets[(m.topic, m.partition)] = m.offset + 1
            consumer.commit(offsets)
        elif Path(stop).exists():
            break
    consumer.close()
    transport.close()
    Path(out).write_text(json.dumps({"seen": seen}))


if __name__ == "__main__":
    main()
