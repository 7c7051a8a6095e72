"""``payevents soak``: N seeded runs of the whole platform under faults, each checked to the last effect.

Each run gets a fresh data directory (and, on PostgreSQL, fresh schemas; on Kafka, a fresh channel on a
local three-node Apache Kafka this command starts) and:

1. starts ``payevents run all`` (relay + every service, supervised) as a subprocess, its output in
   ``{data_dir}/run.log``;
2. writes a seeded, realistic mix of payments through the Payments service (invoices paid in full and in
   part, declines, USD/EUR/JPY/KWD) and interleaves hostile records produced straight to the channel
   (:func:`hostile_records`: malformed JSON, not UTF-8, wrong key, no key, too deep, oversized, card numbers
   in free-text fields, a legacy envelope of a canonical payment, a retry with another eventId);
3. meanwhile SIGKILLs a random worker every 0.5-3 s (children of ``payevents run``, found in
   ``{data_dir}/workers/*.json``; the supervisor restarts them), on Kafka SIGKILLs a random broker and starts
   it again on its own data, and on PostgreSQL cuts every connection the run holds (its workers' and its
   writer's, with ``pg_terminate_backend``: a database restart or failover as the clients see it) halfway
   through the writes and now and then in place of a worker kill; with ``--full-disk`` (root: the run's data
   dir is a tmpfs of its own) fills that filesystem to the last byte a third of the way through the writes,
   kills a worker while it is full and frees it again 3-6 s later: every process's writes (stores, channel,
   mail, logs, status files) fail meanwhile with ENOSPC; and two thirds of the way through the writes freezes a
   random worker (SIGSTOP: its pid is there, nothing in it runs), which the supervisor must find stuck and
   replace (its ``/livez`` stops answering), or the run never drains;
4. waits until everything drained (outbox empty, every group committed to the channel's end, every
   service marked every outbox event, no e-mail pending), stops the workers and measures
   (:func:`measure`): lost events, duplicated effects, order violations, ledger imbalance and card
   numbers found in any store, log, mail or dead letter.

One line per run; a non-zero figure makes the command exit 1. The seed of run ``i`` is ``seed + i``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import sqlalchemy as sa

from payevents.contracts.cardguard import holds_card_number
from payevents.contracts.channel import topic_for
from payevents.services import load_service
from payevents.settings import Settings

SERVICES = ("ledger", "invoices", "analytics", "notifications")
CUSTOMERS = (("cus_soak_ada", "Ada", "ada@example.com", "en_GB"),
             ("cus_soak_hiro", "Hiro", "hiro@example.jp", "ja_JP"),
             ("cus_soak_lena", "Lena", "lena@example.de", "de_DE"),
             ("cus_soak_omar", "Omar", "omar@example.com", "ar_KW"))
CURRENCIES = (("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3))
DECLINES = ("card_declined", "insufficient_funds", "expired_card")
#: Luhn-valid test card numbers, written as people write them in free text
CARDS = ("4111 1111 1111 1111", "5555-5555-5555-4444", "3782 822463 10005", "4012.8888.8888.1881",
         "6011\n1111\n1111\n1117")
_T = TypeVar("_T")
_RawRecord = tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]
_JSON_HEADERS: tuple[tuple[str, bytes], ...] = (("content-type", b"application/json"),)
PG_URL = os.environ.get("PAYEVENTS_SOAK_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclasses.dataclass
class RunResult:
    """What one run did and what it found. The five last figures must be zero."""

    index: int
    seed: int
    payments: int = 0
    events: int = 0
    hostile: int = 0
    kills: int = 0
    broker_kills: int = 0
    #: times every PostgreSQL connection of the run was cut (a database restart, as the clients see it)
    database_kills: int = 0
    #: times the run's filesystem was filled to the last byte for a while (``--full-disk``)
    disk_fills: int = 0
    #: workers frozen (SIGSTOP) for the supervisor to find stuck, and the stuck workers it killed
    freezes: int = 0
    stuck_kills: int = 0
    seconds: float = 0.0
    lost: int = 0
    duplicated: int = 0
    order_violations: int = 0
    ledger_imbalance: int = 0
    card_numbers: int = 0
    #: what each non-zero figure is made of (first few), for the report
    details: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.order_violations or self.ledger_imbalance
                    or self.card_numbers)

    def line(self) -> str:
        extra = [f"+{n} {what}" for n, what in ((self.broker_kills, "broker"), (self.database_kills, "database"),
                                                (self.disk_fills, "full disk"), (self.freezes, "frozen")) if n]
        if self.freezes or self.stuck_kills:
            extra.append(f"{self.stuck_kills} killed as stuck")
        kills = f"{self.kills} kills" + (f" ({', '.join(extra)})" if extra else "")
        return (f"run {self.index} seed {self.seed}: {self.events} events ({self.payments} payments, "
                f"{self.hostile} hostile records), {kills}; lost {self.lost}, duplicated effects "
                f"{self.duplicated}, order violations {self.order_violations}, ledger imbalance "
                f"{self.ledger_imbalance}, card numbers found {self.card_numbers} ({self.seconds:.0f} s)")


# -- hostile records -------------------------------------------------------------------------------------------


def _canonical(payment_id: str, description: str, order_id: str = "ORD-HOSTILE") -> dict[str, Any]:
    from payevents.contracts.codec import to_builtins
    from payevents.contracts.examples import example_event

    doc: dict[str, Any] = to_builtins(example_event("PaymentProcessed"))
    doc["eventId"] = str(uuid.uuid4())
    doc["data"]["paymentId"] = payment_id
    doc["data"]["metadata"]["description"] = description
    doc["data"]["metadata"]["orderId"] = order_id
    return doc


def hostile_records(rnd: random.Random, tag: str) -> list[tuple[str, bytes | None, bytes]]:
    """(kind, key, value) of records every service must dead-letter, none of them leaving an effect."""
    enc = msgspec.json.Encoder(decimal_format="number").encode
    pid = lambda kind: f"pay_hostile_{tag}_{kind}"  # noqa: E731
    card = rnd.choice(CARDS)
    deep: dict[str, Any] = _canonical(pid("deep"), "too deep")
    node = deep["data"]["metadata"]
    for _ in range(20):
        node["x"] = {}
        node = node["x"]
    wrong = _canonical(pid("wrongkey"), "keyed under another payment")
    return [
        ("malformed JSON", pid("json").encode(), b'{"eventType": "PaymentProcessed", "data": {'),
        ("not UTF-8", pid("utf8").encode(), b"\xff\xfe\x00garbage"),
        ("wrong key", f"{pid('wrongkey')}_other".encode(), enc(wrong)),
        ("no key", None, enc(_canonical(pid("nokey"), "sent without a key"))),
        ("too deep", pid("deep").encode(), enc(deep)),
        ("oversized", pid("big").encode(), enc(_canonical(pid("big"), "x" * 70_000))),
        ("card number in description", pid("card1").encode(),
         enc(_canonical(pid("card1"), f"paid with card {card}, thanks"))),
        ("card number in orderId", pid("card2").encode(),
         enc(_canonical(pid("card2"), "order id is a card", order_id=card.replace("\n", " ")))),
    ]


def legacy_duplicate(payment_id: str, value: Decimal, currency: str, env: str) -> bytes:
    """The channel page's PAYMENT_PROCESSED 1.0 envelope of a payment already processed canonically."""
    return json.dumps({
        "eventType": "PAYMENT_PROCESSED",
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "version": "1.0",
        "payload": {
            "paymentId": payment_id, "amount": {"value": float(value), "currency": currency}, "status": "SUCCESS",
            "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12", "expiryYear": "2030",
                              "network": "VISA"},
            "transactionDetails": {"processorId": "stripe_soak", "authorizationCode": "AUTHSOAK", "captureId": "CAPS"},
        },
        "metadata": {"correlationId": f"corr-{payment_id}", "merchantId": "MERCH-456", "source": "payment_service",
                     "environment": env, "idempotencyKey": f"{payment_id}-legacy-{value}"},
    }).encode()


def _produce(settings: Settings, records: list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]) -> None:
    """Produce as a foreign producer would: our transport, bytes nobody validated."""
    from payevents.transport import open_transport
    from payevents.transport.base import Record

    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env)], settings.partitions)
        producer = transport.producer()
        try:
            producer.send([Record(topic=topic_for(settings.env), key=k, value=v, headers=h) for k, v, h in records])
        finally:
            producer.close()
    finally:
        transport.close()


def retry_of(settings: Settings, event_id: str) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    """A retry of an outbox event by another producer: the same record with another eventId."""
    from payevents.services.payments import store as payments_store

    with payments_store.engine(settings).connect() as conn:
        key, headers, body = conn.execute(sa.text(
            "SELECT partition_key, headers, body FROM outbox_events WHERE event_id = :e"), {"e": event_id}).one()
    new_id = str(uuid.uuid4())
    hdrs = {k: (new_id if v == event_id else v) for k, v in json.loads(headers).items()}
    value = bytes(body).replace(event_id.encode(), new_id.encode())
    return bytes(key), value, tuple((k, str(v).encode()) for k, v in hdrs.items())


def retried(fn: Callable[[], _T], timeout: float = 120.0) -> _T:
    """``fn()``, again after a pause while the database or broker is unreachable (a SQLite file locked by a
    worker's migration, a broker being killed): the writer waits like any client would."""
    from payevents.runtime.runner import unreachable

    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        try:
            return fn()
        except Exception as exc:
            if unreachable(exc) is None or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2.0, pause * 2)


# -- the run ---------------------------------------------------------------------------------------------------


class Soak:
    """One soak run: settings, the supervised ``payevents run all``, the writer, the faults."""

    def __init__(self, settings: Settings, index: int, seed: int, payments: int,
                 cluster: Any = None, say: Callable[[str], None] = lambda _s: None, full_disk: bool = False) -> None:
        self.settings = settings
        #: the data dir is a filesystem of its own, filled for a while during the writes (``--full-disk``)
        self.full_disk = full_disk
        self.ballast = settings.data_dir / "ballast"
        self.result = RunResult(index=index, seed=seed)
        self.rnd = random.Random(seed)
        self.total = payments
        self.cluster = cluster
        self.say = say
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = settings.data_dir / "run.log"
        self.expected_letters: dict[str, int] = {}
        #: pids of the workers frozen (SIGSTOP), woken at the end if still there
        self.frozen: list[int] = []
        #: the run's PostgreSQL connections carry this application_name (libpq's PGAPPNAME): the ones cut
        self.app_name = f"payevents-soak-{seed}-{uuid.uuid4().hex[:8]}" if settings.database_url else None

    # workers
    def start_workers(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
        env.update({"PAYEVENTS_ENV": str(s.env), "PAYEVENTS_BROKER": s.broker, "PAYEVENTS_DATA_DIR": str(s.data_dir),
                    "PAYEVENTS_KAFKA_CONFIG": json.dumps(dict(s.kafka_config)), "PAYEVENTS_RESTART_BACKOFF": "0.5",
                    "PAYEVENTS_LOG_FORMAT": "json"})
        if s.database_url:
            env.update({"PAYEVENTS_DATABASE_URL": s.database_url.get_secret_value(),
                        "PAYEVENTS_DB_SCHEMA_PREFIX": s.db_schema_prefix})
        if self.app_name:
            env["PGAPPNAME"] = self.app_name
        cli = shutil.which("payevents", path=str(Path(sys.executable).parent)) or "payevents"
        self.proc = subprocess.Popen([cli, "run", "all", "--max-batch", "200"], env=env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def start_killer(self) -> Callable[[float], None]:
        """SIGKILL a random worker every 0.5-3 s (its own seeded generator: the writer's stays reproducible; on
        PostgreSQL, after the first kill, one time in five the run's connections are cut instead); returns
        ``stop(after)``, which lets it go on for ``after`` seconds (while the services catch up)."""
        rnd = random.Random(self.result.seed * 7919 + 1)
        stop = threading.Event()

        def loop() -> None:
            first = True
            while not stop.wait(rnd.uniform(0.5, 3.0)):
                with contextlib.suppress(Exception):
                    if self.app_name and not first and rnd.random() < 0.2:  # the first is always a worker's
                        self.cut_database()
                    else:
                        self.kill_a_worker(rnd)
                first = False

        thread = threading.Thread(target=loop, name="soak-killer", daemon=True)
        thread.start()

        def stop_after(after: float) -> None:
            time.sleep(after)
            stop.set()
            thread.join()

        return stop_after

    def wait_workers(self, timeout: float = 120.0) -> None:
        """Until the relay and every service announced a pid (so that the first kills find them)."""
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < 1 + len(SERVICES) and time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"payevents run all exited with {self.proc.returncode}; see {self.log}")
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for pid in self.frozen:  # one the supervisor has not replaced (yet) can be stopped too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def worker_pids(self) -> list[tuple[str, int]]:
        """(worker, pid) of the live workers of this ``payevents run`` named in the status registry (each names its
        supervisor; their parent is its fork server)."""
        from payevents.runtime.procs import proc_stat

        assert self.proc is not None
        out = []
        for path in sorted((self.settings.data_dir / "workers").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                doc = json.loads(path.read_text())
                pid = int(doc["pid"])
                fields = proc_stat(pid)
                if fields is not None and fields[0] != "Z" and doc.get("supervisorPid") == self.proc.pid:
                    out.append((path.stem, pid))
        return out

    def kill_a_worker(self, rnd: random.Random) -> None:
        pids = [(name, pid) for name, pid in self.worker_pids() if pid not in self.frozen]  # the supervisor's
        if not pids:
            return
        name, pid = rnd.choice(pids)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.result.kills += 1
            self.say(f"  killed {name} (pid {pid})")

    def freeze_a_worker(self) -> None:
        """SIGSTOP a random worker: alive to anyone who looks at its pid, doing nothing, as a process whose every
        thread waits on a connection gone silent. Only the supervisor's liveness watch gets its work going again
        (the killer leaves it alone)."""
        rnd = random.Random(self.result.seed * 53 + 11)  # its own: the writer's sequence stays the same
        pids = self.worker_pids()
        if not pids:
            return
        name, pid = rnd.choice(pids)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            self.frozen.append(pid)
            self.result.freezes += 1
            self.say(f"  froze {name} (pid {pid})")

    def cut_database(self) -> None:
        """Terminate every PostgreSQL connection of the run (workers, their delivery processes, the writer):
        what each client sees when the database restarts or fails over. Counted when it cut any."""
        assert self.app_name is not None and self.settings.database_url is not None
        engine = sa.create_engine(self.settings.database_url.get_secret_value(),
                                  connect_args={"application_name": "payevents-soak-cutter"}, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                cut = int(conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :app AND pid <> pg_backend_pid()"), {"app": self.app_name}).scalar_one())
        finally:
            engine.dispose()
        if cut:
            self.result.database_kills += 1
            self.say(f"  cut {cut} database connection(s)")

    def fill_disk(self) -> None:
        """Take every free byte of the run's filesystem (a ballast file, written until ENOSPC), kill a worker
        while it is full (its restart and the supervisor's bookkeeping meet the full disk too), and free it
        3-6 s later from a timer; the writer goes on meanwhile (its writes fail and are retried)."""
        rnd = random.Random(self.result.seed * 31 + 7)  # its own: the writer's sequence stays the same
        block = b"\0" * (1 << 20)
        with open(self.ballast, "wb", buffering=0) as f:
            for size in (1 << 20, 1 << 12, 1):  # whole MiBs, then pages, then bytes: to the last one
                try:
                    while True:
                        f.write(block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        try:  # full: a new file (a worker's heartbeat, a mail, a log line) gets no block
            (self.settings.data_dir / "probe").write_bytes(b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        else:
            raise RuntimeError(f"--full-disk: {self.settings.data_dir} still takes writes after the ballast")
        finally:
            with contextlib.suppress(OSError):
                (self.settings.data_dir / "probe").unlink()
        self.result.disk_fills += 1
        self.say(f"  filled the disk ({self.ballast.stat().st_size >> 20} MiB of ballast)")
        self.kill_a_worker(rnd)
        timer = threading.Timer(rnd.uniform(3.0, 6.0), self.free_disk)
        timer.daemon = True
        timer.start()

    def free_disk(self) -> None:
        try:
            self.ballast.unlink()
        except FileNotFoundError:
            return
        self.say("  freed the disk")

    # writer
    def setup(self) -> None:
        from payevents.services.notifications.customers import add_customer

        for cid, name, email, locale in CUSTOMERS:
            retried(functools.partial(add_customer, self.settings, cid, name, email, locale))

    def specs(self, n: int, start: int) -> list[Any]:
        from payevents.services import invoices
        from payevents.services.payments import PaymentSpec

        rnd, out = self.rnd, []
        due = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
        for i in range(start, start + n):
            cid = rnd.choice(CUSTOMERS)[0]
            currency, exp = rnd.choice(CURRENCIES)
            minor = rnd.randint(1, 500_000)
            amount = str(Decimal(minor).scaleb(-exp))
            roll = rnd.random()
            invoice = None
            if roll < 0.35:  # an invoice paid in full or in part
                invoice = f"INV-SOAK-{self.result.seed}-{i}"
                due_minor = minor if rnd.random() < 0.6 else minor * 2
                inv, due_amount = invoice, str(Decimal(due_minor).scaleb(-exp))
                retried(functools.partial(invoices.create, self.settings, invoice_id=inv, customer_id=cid,
                                          amount_due=due_amount, currency=currency, due_date=due))
            out.append(PaymentSpec(customer_id=cid, amount=amount, currency=currency, invoice_id=invoice,
                                   order_id=f"ORD-SOAK-{self.result.seed}-{i}", merchant_id="MERCH-456",
                                   description=f"soak {self.result.seed} payment {i}",
                                   idempotency_key=f"soak-{self.result.seed}-{i}",  # a retried write: no twin
                                   decline=rnd.choice(DECLINES) if roll > 0.93 else None))
        return out

    def write(self) -> None:
        from payevents.services import payments

        hostile = hostile_records(self.rnd, f"{self.result.seed}")
        self.rnd.shuffle(hostile)
        chunks: list[int] = []
        left = self.total
        while left > 0:
            chunks.append(min(left, self.rnd.randint(5, 30)))
            left -= chunks[-1]
        n_chunks = len(chunks)
        # where hostile records, kills and (on Kafka) the broker kill land, as chunk indexes
        hostile_at = sorted(self.rnd.randrange(n_chunks) for _ in hostile)
        broker_down, broker_up = (n_chunks // 4, n_chunks // 2) if self.cluster is not None else (-1, -1)
        database_cut = n_chunks // 2 if self.app_name else -1  # and now and then by the killer (start_killer)
        disk_full = n_chunks // 3 if self.full_disk else -1
        freeze = n_chunks * 2 // 3
        victim: int | None = None
        processed: list[Any] = []
        written = 0
        for c, n in enumerate(chunks):
            specs = self.specs(n, written)
            done = retried(functools.partial(payments.process_payments, self.settings, specs))
            written += n
            processed.extend(p for p in done if p.state == "processed" and p.currency in ("USD", "EUR"))
            while hostile_at and hostile_at[0] == c:
                hostile_at.pop(0)
                kind, key, value = hostile.pop()
                retried(functools.partial(_produce, self.settings, [(key, value, _JSON_HEADERS)]))
                self.result.hostile += 1
                self.expected_letters[kind] = len(SERVICES)
            if processed and self.rnd.random() < 0.4:  # a legacy duplicate or a retry of a processed payment
                p = self.rnd.choice(processed)
                if self.rnd.random() < 0.5:
                    rec: _RawRecord = (p.payment_id.encode(), legacy_duplicate(
                        p.payment_id, p.amount, p.currency, str(self.settings.env)), _JSON_HEADERS)
                else:
                    event_id = retried(functools.partial(self._processed_event, p.payment_id))
                    rec = retried(functools.partial(retry_of, self.settings, event_id))
                retried(functools.partial(_produce, self.settings, [rec]))
                self.result.hostile += 1
            if c == broker_down:
                victim = self.rnd.randrange(len(self.cluster.nodes))
                self.cluster.nodes[victim].kill()
                self.result.broker_kills += 1
                self.say(f"  killed broker {self.cluster.nodes[victim].node_id}")
            if c == database_cut:
                retried(self.cut_database)
            if c == disk_full:
                self.fill_disk()
            if c >= freeze and not self.result.freezes:
                # at two thirds of the run, or at the first chunk after it that finds a worker alive to freeze (the
                # killer may have all of them down and restarting at that moment: CI met a run without a freeze)
                self.freeze_a_worker()
            if c == broker_up and victim is not None:
                self.cluster.start_node(victim)
                self.say(f"  broker {self.cluster.nodes[victim].node_id} started again")
                victim = None
            time.sleep(self.rnd.uniform(0.0, 0.05))
        for kind, key, value in hostile:  # any left (never, with the positions above; kept for safety)
            _produce(self.settings, [(key, value, ())])
            self.result.hostile += 1
            self.expected_letters[kind] = len(SERVICES)
        self.result.payments = written

    def _processed_event(self, payment_id: str) -> str:
        from payevents.services.payments import store as payments_store

        with payments_store.engine(self.settings).connect() as conn:
            return str(conn.execute(sa.text(
                "SELECT event_id FROM outbox_events WHERE payment_id = :p AND event_type = 'PaymentProcessed'"),
                {"p": payment_id}).scalar_one())

    # draining
    def drained(self) -> bool:
        from payevents.runtime import outbox
        from payevents.services.payments import store as payments_store
        from payevents.transport import open_transport

        if outbox.pending_count(payments_store.engine(self.settings)) != 0:
            return False
        t = open_transport(self.settings)
        try:
            topic = topic_for(self.settings.env)
            ends = t.describe(topic).end_offsets
            for committed in _committed(t, topic).values():
                if any(committed.get(p, 0) < end for p, end in ends.items()):
                    return False
        finally:
            t.close()
        with _engine(self.settings, "notifications").connect() as conn:
            pending = conn.execute(sa.text("SELECT COUNT(*) FROM notifications WHERE status = 'pending'")).scalar_one()
        return int(pending) == 0

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a store or broker still coming back
                if self.drained():
                    time.sleep(1.0)  # dead letters are produced before the offsets commit; the last e-mail file
                    return True
            time.sleep(0.5)
        return False


def _engine(settings: Settings, service: str) -> sa.Engine:
    from payevents.store import db

    return db.engine_for(settings, service)


# -- measuring -------------------------------------------------------------------------------------------------


def _marks(settings: Settings, service: str) -> list[tuple[str, str, int, int]]:
    """(event_id, outcome, partition, offset) in the order the service wrote them. SQLite: rowid, the order of
    the inserts. PostgreSQL keeps no such order: its batches by ``applied_at`` (one per transaction), and inside
    one the partition and offset — a row's physical place (``ctid``) is not its insert's order (an UPDATE, or a
    slot a rolled-back batch freed, puts it elsewhere), so there the check compares batches and the order inside
    a batch is the runtime's own (its records in offset order; the SQLite runs check it)."""
    order = "rowid" if settings.schema_for(service) is None else "applied_at, partition_no, offset_no"
    with _engine(settings, service).connect() as conn:
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in conn.execute(sa.text(
            "SELECT event_id, outcome, partition_no, offset_no FROM processed_events WHERE service = :s"
            f" ORDER BY {order}"), {"s": service})]


def _committed(t: Any, topic: str) -> dict[str, dict[int, int]]:
    """Per service, its group's committed offset per partition of ``topic`` (``t``: an open transport)."""
    return {svc: t.group_offsets(load_service(svc).group, topic) for svc in SERVICES}


def read_channel(settings: Settings) -> list[tuple[int, int, bytes | None, dict[str, bytes]]]:
    """(partition, offset, key, headers) of every record on the channel, either transport."""
    from payevents.transport import open_transport

    topic = topic_for(settings.env)
    t = open_transport(settings)
    out = []
    try:
        info = t.describe(topic)
        for p, end in sorted(info.end_offsets.items()):
            offset = 0
            while offset < end:
                msgs = t.read(topic, p, offset, max_records=1000)
                if not msgs:
                    break
                for m in msgs:
                    out.append((p, m.offset, m.key, dict(m.headers or ())))
                offset = msgs[-1].offset + 1
    finally:
        t.close()
    return out


def measure(settings: Settings, result: RunResult, *, extra_logs: list[Path] | None = None,
            expected_letters: dict[str, int] | None = None) -> RunResult:
    """Fill the five figures of ``result`` from the stores, the channel, the logs and the Maildir."""
    from payevents.services import ledger
    from payevents.services.payments import store as payments_store

    details = result.details
    with payments_store.engine(settings).connect() as conn:
        ob = [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in conn.execute(sa.text(
            "SELECT event_id, payment_id, event_type, seq FROM outbox_events ORDER BY seq"))]
        totals = {str(c): int(a) for c, a in conn.execute(sa.text(
            "SELECT currency, SUM(amount_minor) FROM payments WHERE state = 'processed' GROUP BY currency"))}
    result.events = len(ob)
    outbox_ids = {e for e, *_ in ob}

    # lost: not on the channel, or not marked by a service
    channel = read_channel(settings)
    first_pos: dict[str, tuple[int, int]] = {}
    for p, o, _k, h in channel:
        eid = h.get("eventId")
        if eid is not None:
            first_pos.setdefault(eid.decode(errors="replace"), (p, o))
    missing = outbox_ids - set(first_pos)
    if missing:
        result.lost += len(missing)
        details.append(f"lost: {len(missing)} outbox event(s) not on the channel, e.g. {sorted(missing)[:3]}")
    # every outbox event of a type a service handles is marked by it; one of another type it may pass over
    # unread, and then its group's committed offset must be past the event's record (it was judged)
    marks = {svc: _marks(settings, svc) for svc in SERVICES}
    from payevents.transport import open_transport

    transport = open_transport(settings)
    try:
        committed = _committed(transport, topic_for(settings.env))
    finally:
        transport.close()
    for svc, rows in marks.items():
        handled = set(load_service(svc).handlers)
        marked = {e for e, *_ in rows}
        unmarked = {e for e, _p, t, _s in ob if t in handled} - marked
        if unmarked:
            result.lost += len(unmarked)
            details.append(f"lost: {svc} never applied {len(unmarked)} event(s), e.g. {sorted(unmarked)[:3]}")
        unread = {e for e, _p, t, _s in ob if t not in handled and e not in marked and e in first_pos
                  and committed[svc].get(first_pos[e][0], 0) <= first_pos[e][1]}
        if unread:
            result.lost += len(unread)
            details.append(f"lost: {svc} never read {len(unread)} event(s) (its committed offset is before them),"
                           f" e.g. {sorted(unread)[:3]}")

    # order: per payment on the channel (outbox order), per service and partition in the order applied
    by_payment: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for e, pid, _t, _seq in ob:
        if e in first_pos:
            by_payment[pid].append(first_pos[e])
    for pid, positions in by_payment.items():
        if len({p for p, _ in positions}) > 1 or positions != sorted(positions):
            result.order_violations += 1
            details.append(f"order: {pid} out of outbox order on the channel")
    for svc, rows in marks.items():
        last: dict[int, int] = {}
        for e, _outcome, p, o in rows:
            if o <= last.get(p, -1):
                result.order_violations += 1
                details.append(f"order: {svc} applied partition {p} offset {o} after {last[p]} ({e})")
            last[p] = max(o, last.get(p, -1))

    # duplicated effects: more than one per business fact
    processed = {pid for _e, pid, t, _s in ob if t == "PaymentProcessed"}
    queries = {
        "ledger": "SELECT payment_id, COUNT(*) FROM journal_entries WHERE kind = 'payment' GROUP BY payment_id",
        "invoices": "SELECT payment_id, COUNT(*) FROM invoice_payments GROUP BY payment_id",
        "analytics": "SELECT payment_id || ' ' || event_type, COUNT(*) FROM analytics_events"
                     " GROUP BY payment_id, event_type",
        "notifications": "SELECT payment_id, COUNT(*) FROM notifications GROUP BY payment_id",
    }
    effects: dict[str, dict[str, int]] = {}
    for svc, q in queries.items():
        with _engine(settings, svc).connect() as conn:
            effects[svc] = {str(k): int(n) for k, n in conn.execute(sa.text(q))}
        extra = sum(n - 1 for n in effects[svc].values() if n > 1)
        if extra:
            result.duplicated += extra
            details.append(f"duplicated: {extra} extra effect(s) in {svc}")
        strangers = [k for k in effects[svc] if k.split(" ")[0] not in {pid for _e, pid, _t, _s in ob}]
        if strangers:  # an effect of a hostile record (none may have one)
            result.duplicated += len(strangers)
            details.append(f"duplicated: {svc} has effects of records not from the outbox: {strangers[:3]}")
    for svc in ("ledger", "notifications"):
        absent = processed - set(effects[svc])
        if absent:
            result.lost += len(absent)
            details.append(f"lost: {svc} has no effect for {len(absent)} processed payment(s)")

    # ledger: verify, balances, cash = processed amounts per currency
    report = ledger.verify(settings)
    if not report.ok:
        result.ledger_imbalance += len(report.violations) or 1
        details.append(f"ledger: {report.violations[:3]}")
    tb = ledger.balances(settings)
    if not tb.balanced:
        result.ledger_imbalance += 1
        details.append("ledger: the trial balance does not balance")
    cash: dict[str, int] = collections.defaultdict(int)
    for entry in ledger.journal(settings, limit=10_000_000):
        for ln in entry.lines:
            if ln.account == "cash" and ln.side == "D":
                cash[ln.currency] += int(ln.amount_minor)
    for cur in set(cash) | set(totals):
        if cash.get(cur, 0) != totals.get(cur, 0):
            result.ledger_imbalance += 1
            details.append(f"ledger: cash {cur} {cash.get(cur, 0)} != processed {totals.get(cur, 0)} (minor units)")

    # dead letters: every hostile poison record dead-lettered by every service (else it was lost)
    from payevents.runtime.deadletter import list_dead_letters

    letters = list_dead_letters(settings, limit=10**9)
    if expected_letters is not None:
        want = sum(expected_letters.values())
        # a worker killed between producing a batch's letters and committing it produces them again: count
        # each (service, original record) once
        hostile_letters = {(d.service, d.original_partition, d.original_offset) for d in letters
                           if d.key is None or d.key.startswith(b"pay_hostile_")}
        if len(hostile_letters) < want:
            result.lost += want - len(hostile_letters)
            details.append(f"lost: {want - len(hostile_letters)} hostile record(s) neither applied nor dead-lettered")

    # card numbers anywhere
    hits = scan_cards(settings, letters, extra_logs or [])
    result.card_numbers = len(hits)
    details.extend(f"card number: {h}" for h in hits[:10])
    return result


def scan_cards(settings: Settings, letters: list[Any], extra_logs: list[Path]) -> list[str]:
    """Where a card number rests: every text/blob value of every store (SQLite files of the data dir, or
    the run's PostgreSQL schemas), every ``*.log`` file, the Maildir, every dead letter. The channel itself
    (``channel.db``'s log) is not scanned: it holds what hostile producers sent, not what payevents kept."""
    hits: list[str] = []
    data = settings.data_dir
    for path in sorted(data.rglob("*.db")):
        hits.extend(_scan_sqlite(path))
    if settings.schema_for("payments") is not None:  # PostgreSQL
        hits.extend(_scan_postgres(settings))
    logs = sorted(set(data.rglob("*.log")) | set(data.rglob("*.jsonl")) | set(extra_logs))
    for path in logs:
        with contextlib.suppress(OSError):
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                if _holds(line):
                    hits.append(f"{path.name}:{n}: {_excerpt(line)}")
    maildir = data / "maildir"
    if maildir.exists():
        for path in sorted(p for p in maildir.rglob("*") if p.is_file()):
            if any(_holds(text.encode()) for text in mail_texts(path.read_bytes())):
                hits.append(f"maildir/{path.relative_to(maildir)}")
    for d in letters:
        parts = [d.value, d.key or b"", *(v for _k, v in d.headers)]
        if any(_holds(bytes(p)) for p in parts):
            hits.append(f"dead letter p{d.partition}@{d.offset} ({d.service})")
    return hits


#: a Unix time in milliseconds (13 digits) or in seconds with a fraction, as Kafka's server.log and status
#: documents write them: Luhn-valid one time in ten, so the card guard takes some for card numbers
_EPOCH = re.compile(rb"(?<![0-9.])(1[6-9][0-9]{8})(?:([0-9]{3})|\.[0-9]{1,9})(?![0-9])")


def without_timestamps(raw: bytes, now: float | None = None) -> bytes:
    """``raw`` with every Unix timestamp of the last 30 days (or the next) replaced by ``<time>``; only
    such a token is touched: a card number's digits are never a time of this month."""
    now = time.time() if now is None else now

    def sub(m: re.Match[bytes]) -> bytes:
        return b"<time>" if abs(int(m.group(1)) - now) < 30 * 86400 else m.group(0)

    return _EPOCH.sub(sub, raw) if b"1" in raw else raw


def _excerpt(raw: bytes) -> str:
    """Where in ``raw`` the card number is, masked, with some context (to tell a leak from a false alarm)."""
    from payevents.contracts.cardguard import card_spans, mask_card_text

    text = raw.decode("utf-8", "replace")
    start = next((a for a, _b in card_spans(text)), 0)
    return mask_card_text(text)[max(0, start - 60): start + 60].replace("\n", " ")


def mail_texts(raw: bytes) -> list[str]:
    """What a reader of the e-mail sees: its header values and every part decoded (quoted-printable and
    base64 undone). The raw file is not scanned: a soft line break inside a uuid leaves digit groups that
    look like a card number, and base64 would hide a real one."""
    import email
    from email import policy

    msg = email.message_from_bytes(raw, policy=policy.default)
    texts = [str(v) for _k, v in msg.items()]
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return texts


def _holds(raw: bytes) -> bool:
    """:func:`holds_card_number` on ``raw`` without its Unix times. A value the guard cannot parse (it raised
    on a number outside Decimal's range) is read as text."""
    from payevents.contracts.cardguard import contains_card_number

    raw = without_timestamps(raw)
    try:
        return holds_card_number(raw)
    except ArithmeticError:
        return contains_card_number(raw.decode("utf-8", "replace"))


def _check_value(where: str, value: Any, hits: list[str]) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)) and _holds(bytes(value)):
        hits.append(where)


def _scan_sqlite(path: Path) -> list[str]:
    import sqlite3

    hits: list[str] = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            if path.name == "channel.db" and table == "log":
                continue
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for i, value in enumerate(row):
                    _check_value(f"{path.name}:{table}[{i}]", value, hits)
    finally:
        conn.close()
    return hits


def _scan_postgres(settings: Settings) -> list[str]:
    hits: list[str] = []
    engine = sa.create_engine(settings.database_url_for("payments"))
    try:
        with engine.connect() as conn:
            cols = conn.execute(sa.text(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
                " WHERE starts_with(table_schema::text, :p) AND data_type IN ('text', 'character varying', 'character',"
                " 'bytea', 'json', 'jsonb')"), {"p": settings.db_schema_prefix}).all()
            for schema, table, column, data_type in cols:
                cast = "" if data_type == "bytea" else "::text"  # bytea as text is hex: digits that are no card
                for (value,) in conn.execute(sa.text(f'SELECT "{column}"{cast} FROM "{schema}"."{table}"')):
                    _check_value(f"{schema}.{table}.{column}", value, hits)
    finally:
        engine.dispose()
    return hits


# -- the command -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _cluster(transport: str, root: Path, say: Callable[[str], None]) -> Iterator[Any]:
    if transport != "kafka":
        yield None
        return
    from payevents.localkafka import LocalKafka

    say("starting a local three-node Apache Kafka …")
    kafka = LocalKafka(3, data_dir=root / "kafka").start()
    try:
        yield kafka
    finally:
        kafka.stop()


def soak(runs: int, payments: int, seed: int, *, transport: str = "embedded", database: str = "sqlite",
         keep: Path | None = None, drain_timeout: float = 300.0, full_disk: bool = False,
         say: Callable[[str], None] = print) -> list[RunResult]:
    """``runs`` seeded runs; returns their results (each line is also said as it finishes). ``full_disk``: each
    run's data dir is a tmpfs of its own (mounted and unmounted here: root only), filled for a while."""
    from payevents.localkafka import FAST_GROUP_CONFIG, fresh_channel
    from payevents.store.db import dispose_engines

    if transport not in ("embedded", "kafka"):
        raise ValueError(f"--transport: {transport!r} is not one of embedded, kafka")
    if database not in ("sqlite", "postgresql"):
        raise ValueError(f"--database: {database!r} is not one of sqlite, postgresql")
    root = keep or Path(tempfile.mkdtemp(prefix="payevents-soak-"))
    results: list[RunResult] = []
    try:
        with _cluster(transport, root, say) as cluster:
            for i in range(runs):
                run_seed = seed + i
                values: dict[str, Any] = {"env": "dev", "data_dir": root / f"run-{i}"}
                prefix = f"soak{uuid.uuid4().hex[:8]}_"
                if database == "postgresql":
                    values.update(database_url=PG_URL, db_schema_prefix=prefix)
                if cluster is not None:
                    fresh_channel(cluster.bootstrap)
                    values.update(broker=cluster.url, kafka_config={**FAST_GROUP_CONFIG,
                                                                     "message.timeout.ms": "30000"})
                settings = Settings(**values)
                with _own_filesystem(settings.data_dir, full_disk):
                    results.append(_one_run(settings, i, run_seed, payments, cluster, drain_timeout, say,
                                            full_disk))
                say(results[-1].line())
                for d in results[-1].details[:10]:
                    say(f"  {d}")
                dispose_engines()
                if database == "postgresql" and keep is None:
                    from payevents.bench.core import drop_schemas

                    drop_schemas(PG_URL, prefix)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


#: the size of a ``--full-disk`` run's filesystem: room for thousands of payments (a run of 1,500 uses ~15 MiB)
FULL_DISK_SIZE: Final = "256m"


@contextlib.contextmanager
def _own_filesystem(data_dir: Path, mount: bool) -> Iterator[None]:
    """With ``mount``, ``data_dir`` is a tmpfs of :data:`FULL_DISK_SIZE` while inside; its files are copied
    back into the directory when it is unmounted (``--keep`` keeps them)."""
    if not mount:
        yield
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK_SIZE}", "tmpfs", str(data_dir)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ValueError(f"--full-disk: could not mount a tmpfs on {data_dir} (it needs root): "
                         f"{done.stderr.strip() or done.returncode}")
    kept = data_dir.with_name(data_dir.name + ".kept")
    try:
        yield
    finally:
        from payevents.store.db import dispose_engines

        dispose_engines()
        shutil.copytree(data_dir, kept, ignore=shutil.ignore_patterns("ballast"), dirs_exist_ok=True)
        subprocess.run(["umount", "--lazy", str(data_dir)], check=True)
        shutil.copytree(kept, data_dir, dirs_exist_ok=True)
        shutil.rmtree(kept, ignore_errors=True)


@contextlib.contextmanager
def _pg_app_name(name: str | None) -> Iterator[None]:
    """This process's PostgreSQL connections opened inside carry ``name`` as their application_name (libpq's
    PGAPPNAME; None: unchanged)."""
    before = os.environ.get("PGAPPNAME")
    if name is not None:
        os.environ["PGAPPNAME"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PGAPPNAME", None)
        else:
            os.environ["PGAPPNAME"] = before


def _one_run(settings: Settings, index: int, seed: int, payments: int, cluster: Any, drain_timeout: float,
             say: Callable[[str], None], full_disk: bool = False) -> RunResult:
    started = time.monotonic()
    run = Soak(settings, index, seed, payments, cluster=cluster, say=say, full_disk=full_disk)
    try:
        with _pg_app_name(run.app_name):  # the writer's connections are cut with the workers'
            run.start_workers()
            run.wait_workers()
            run.setup()
            stop_killer = run.start_killer()
            try:
                run.write()
            finally:
                stop_killer(random.Random(seed).uniform(3.5, 6.0))  # > 3 s: at least one kill per run
            drained = run.wait_drained(drain_timeout)
    finally:
        run.free_disk()
        run.stop_workers()
        if cluster is not None:
            for i, node in enumerate(cluster.nodes):
                if not node.alive:
                    cluster.start_node(i)
    result = run.result
    with contextlib.suppress(OSError):
        result.stuck_kills = sum(" is stuck (" in line and not line.startswith("{")  # the supervisor's, not its log's
                                 for line in run.log.read_text(errors="replace").splitlines())
    if not drained:
        result.details.append(f"not drained within {drain_timeout:.0f} s (what is missing is counted below)")
    logs = [n.log_file for n in cluster.nodes] if cluster is not None else []
    measure(settings, result, extra_logs=logs, expected_letters=run.expected_letters)
    result.seconds = time.monotonic() - started
    return result
