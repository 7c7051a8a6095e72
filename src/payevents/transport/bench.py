"""Transport throughput: ``python -m payevents.transport.bench [--broker embedded|kafka://h:p|local]``.

Phase 1 sends N records (1 KB values, uuid keys) in batches; phase 2 has G consumer groups, each in its
own process, poll and commit them all; phase 3 runs a producer and the G groups at the same time
(end to end). Prints records/s. A benchmark, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path

from payevents.settings import Settings
from payevents.transport import Record, open_transport


def _settings(broker: str, data_dir: str) -> Settings:
    from payevents.localkafka import FAST_GROUP_CONFIG

    cfg = dict(FAST_GROUP_CONFIG) if broker.startswith("kafka://") else {}
    return Settings(env="dev", broker=broker, data_dir=Path(data_dir), kafka_config=cfg)  # type: ignore[arg-type]


def _consume(broker: str, data_dir: str, topic: str, group: str, total: int, batch: int,
             result: mp.Queue) -> None:  # type: ignore[type-arg]
    transport = open_transport(_settings(broker, data_dir))
    consumer = transport.consumer(group, [topic])
    n = 0
    start = None
    while n < total:
        msgs = consumer.poll(batch, 0.5)
        if not msgs:
            continue
        if start is None:
            start = time.perf_counter()
        n += len(msgs)
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            offsets[(m.topic, m.partition)] = m.offset + 1
        consumer.commit(offsets)
    result.put((group, n, time.perf_counter() - (start or time.perf_counter()), time.perf_counter()))
    consumer.close()
    transport.close()


def _records(topic: str, n: int, size: int) -> list[Record]:
    value = b"x" * size
    headers = (("eventType", b"PaymentProcessed"), ("version", b"1.0.0"), ("content-type", b"application/json"))
    keys = [str(uuid.uuid4()).encode() for _ in range(max(n // 5, 1))]
    return [Record(topic, value, keys[i % len(keys)], (*headers, ("eventId", str(i).encode()))) for i in range(n)]


def _send(broker: str, data_dir: str, records: list[Record], batch: int) -> float:
    transport = open_transport(_settings(broker, data_dir))
    producer = transport.producer()
    t0 = time.perf_counter()
    for i in range(0, len(records), batch):
        producer.send(records[i:i + batch])
    elapsed = time.perf_counter() - t0
    producer.close()
    transport.close()
    return elapsed


def _groups(broker: str, data_dir: str, topic: str, groups: int, total: int, batch: int,
            produce: list[Record] | None = None) -> tuple[list[tuple[str, int, float, float]], float]:
    ctx = mp.get_context("spawn")
    result: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    tag = uuid.uuid4().hex[:6]
    procs = [ctx.Process(target=_consume, args=(broker, data_dir, topic, f"bench-{tag}-{g}", total, batch, result))
             for g in range(groups)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    if produce is not None:
        time.sleep(1.0 if broker == "embedded" else 3.0)  # let the groups join first
        t0 = time.perf_counter()
        _send(broker, data_dir, produce, batch)
    out = [result.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return out, max(end for *_, end in out) - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--broker", default="embedded",
                    help="embedded, kafka://host:port, or local (start a local Apache Kafka)")
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=1000, help="value bytes")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=6)
    args = ap.parse_args()

    broker = args.broker
    local = None
    if broker == "local":
        from payevents.localkafka import LocalKafka

        local = LocalKafka().start()
        broker = local.url
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            transport = open_transport(_settings(broker, data_dir))
            topic = f"bench.{uuid.uuid4().hex[:8]}"
            transport.create_topics([topic, topic + ".e2e"], args.partitions)
            transport.close()
            n = args.records
            elapsed = _send(broker, data_dir, _records(topic, n, args.size), args.batch)
            print(f"send:  {n} records in {elapsed:.2f}s = {n / elapsed:,.0f} records/s (batch {args.batch})")
            res, wall = _groups(broker, data_dir, topic, args.groups, n, args.batch)
            for group, got, secs, _ in res:
                print(f"poll+commit {group}: {got} records in {secs:.2f}s = {got / secs:,.0f} records/s")
            print(f"poll+commit, {args.groups} groups at once: {args.groups * n / wall:,.0f} records/s in total")
            res, wall = _groups(broker, data_dir, topic + ".e2e", args.groups, n, args.batch,
                                produce=_records(topic + ".e2e", n, args.size))
            print(f"end to end (1 producer, {args.groups} groups at once): {n / wall:,.0f} records/s produced "
                  f"and consumed by every group ({args.groups * n / wall:,.0f} deliveries/s)")
    finally:
        if local is not None:
            local.stop()


if __name__ == "__main__":
    main()
