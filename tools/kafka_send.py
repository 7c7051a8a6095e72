"""How long the relay's send to Apache Kafka takes on its own (issue #14: the publish delay's tail on Kafka).

A local single-node broker (``payevents.localkafka``, as the benchmarks start it), the channel created through the
transport, then the transport's own producer (``KafkaProducer.send``: idempotent, acks=all, blocks until every
record is acknowledged — what the relay calls once per pass) sends the benchmark's PaymentProcessed records in
batches every 10 ms, as many as a relay pass holds at the offered rate (4 events a payment: 40 records at 1,000
payments/s, 80 at 2,000), for ``--seconds`` per rate. Prints p50 / p99 / max of a batch's send. Nothing else runs:
no writer, no relay, no marks — compare with the publish benchmark's delays, where all of them share the cores::

    .venv/bin/python tools/kafka_send.py --seconds 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="per offered rate")
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 2000], help="payments/s offered")
    args = ap.parse_args()

    from payevents.bench.events import make_events, run_id, to_records
    from payevents.contracts.channel import Env, topic_for
    from payevents.localkafka import LocalKafka
    from payevents.settings import Settings
    from payevents.transport import open_transport

    broker = LocalKafka().start()
    try:
        with tempfile.TemporaryDirectory(prefix="kafka-send-") as tmp:
            settings = Settings(env=Env.dev, data_dir=Path(tmp), broker=broker.url)
            transport = open_transport(settings)
            topic = topic_for(settings.env)
            transport.create_topics([topic], settings.partitions)
            producer = transport.producer()
            records = to_records(make_events(20_000, env="dev", run=run_id()), "dev")
            producer.send(records[:500])  # warm-up: metadata, connections, the producer id
            sent = 500
            for rate in args.rates:
                per_batch = rate * 4 // 100
                took: list[float] = []
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    if sent + per_batch > len(records):
                        sent = 500
                    t0 = time.monotonic()
                    producer.send(records[sent : sent + per_batch])
                    took.append((time.monotonic() - t0) * 1000)
                    sent += per_batch
                    time.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))
                took.sort()
                print(f"{rate:,} payments/s ({per_batch} records every 10 ms): {len(took)} sends, "
                      f"p50 {took[len(took) // 2]:.1f} ms, p99 {took[int(len(took) * 0.99)]:.1f} ms, "
                      f"max {took[-1]:.1f} ms", flush=True)
            producer.close()
            transport.close()
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
