"""``payevents soak``, bounded: two embedded runs (and one Kafka run) come out all zeros, and each of the five
figures does count what it claims to — a card number planted in a log, a store or a mail, an event a service
never applied, a second effect, an offset applied out of order, a ledger off by one minor unit.

Never asserts durations. ``PAYEVENTS_SOAK_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from payevents.bench.soak import RunResult, measure, scan_cards
from payevents.runtime.deadletter import list_dead_letters
from payevents.settings import Settings
from payevents.store.db import dispose_engines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LINE = re.compile(r"^run (\d+) seed (\d+): (\d+) events \((\d+) payments, (\d+) hostile records\), (\d+) kills.*; "
                  r"lost (\d+), duplicated effects (\d+), order violations (\d+), ledger imbalance (\d+), "
                  r"card numbers found (\d+)", re.M)
CLI = str(Path(sys.executable).parent / "payevents")


def _seed() -> int:
    return int(os.environ.get("PAYEVENTS_SOAK_SEED") or random.SystemRandom().randrange(1, 10**6))


def _soak(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[tuple[int, ...]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_") or k == "PAYEVENTS_SOAK_PG_URL"}
    proc = subprocess.run([CLI, "soak", *args, "--keep", str(root)], env=env, capture_output=True, text=True,
                          timeout=540, check=False)
    print(proc.stdout)
    return proc, [tuple(int(g) for g in m.groups()) for m in LINE.finditer(proc.stdout)]


@pytest.fixture(scope="module")
def embedded_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[tuple[int, ...]]]]:
    root = tmp_path_factory.mktemp("soak")
    seed = _seed()
    proc, lines = _soak(root, "--runs", "2", "--payments", "150", "--seed", str(seed))
    assert proc.returncode == 0, f"seed {seed}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    (root / "soak.out").write_text(proc.stdout)
    yield root, lines
    dispose_engines()


def _copy(root: Path, dest: Path) -> Settings:
    """A copy of run 0's data dir (the checks below change it) and its settings."""
    shutil.copytree(root / "run-0", dest, ignore=shutil.ignore_patterns("*.lock"))
    return Settings(env="dev", data_dir=dest)  # type: ignore[arg-type]


def _measure(s: Settings) -> RunResult:
    return measure(s, RunResult(index=0, seed=0))


def test_two_embedded_runs_under_kills_and_hostile_records_come_out_all_zeros(
        embedded_runs: tuple[Path, list[tuple[int, ...]]]) -> None:
    root, lines = embedded_runs
    assert [line[0] for line in lines] == [0, 1]
    for _i, _s, events, payments, hostile, kills, *figures in lines:
        assert payments == 150 and events >= 3 * payments  # every payment emits 3 (declined) or 4 events
        assert hostile >= 8 and kills >= 1
        assert figures == [0, 0, 0, 0, 0]
    # a worker frozen in each run (SIGSTOP, never SIGKILLed by the soak): the supervisor found it stuck and replaced
    # it, or the run would not have drained; no other worker was taken for stuck
    assert (root / "soak.out").read_text().count("+1 frozen, 1 killed as stuck)") == 2
    # what the hostile records became: each poison one dead-lettered by each of the four services, masked
    s = Settings(env="dev", data_dir=root / "run-0")  # type: ignore[arg-type]
    letters = list_dead_letters(s, limit=10**6)
    reasons = {d.reason.split(":")[0] for d in letters}
    assert {"key", "invalid", "not-utf8", "card-number"} <= reasons, reasons
    # once per service and record (a worker killed between producing a batch's letters and its commit
    # produces them again)
    assert len({(d.service, d.original_partition, d.original_offset) for d in letters}) == 8 * 4
    # the legacy envelope and the retries were absorbed as duplicates of their business fact, never applied
    with sqlite3.connect(root / "run-0" / "ledger.db") as conn:
        absorbed = conn.execute("SELECT COUNT(*) FROM processed_events WHERE outcome = 'absorbed'").fetchone()[0]
    assert absorbed == lines[0][4] - 8


def test_the_card_scan_finds_a_card_number_planted_in_a_log_a_store_and_a_mail(
        embedded_runs: tuple[Path, list[tuple[int, ...]]], tmp_path: Path) -> None:
    s = _copy(embedded_runs[0], tmp_path / "data")
    assert scan_cards(s, [], []) == []
    with (s.data_dir / "run.log").open("a") as f:
        f.write('{"message": "charged card 4111-1111-1111-1111"}\n')
    with sqlite3.connect(s.data_dir / "notifications.db") as conn:
        conn.execute("UPDATE customers SET name = 'Ada 5555 5555 5555 4444' WHERE customer_id = 'cus_soak_ada'")
    from email.message import EmailMessage

    mail = EmailMessage()  # base64: the digits are not in the file's bytes, the scan decodes what a reader sees
    mail["Subject"] = "Your payment"
    mail.set_content("Paid with card 3782 822463 10005.\n" * 3, cte="base64")
    raw = mail.as_bytes()
    assert b"3782" not in raw
    (s.data_dir / "maildir" / "new" / "planted").write_bytes(raw)
    other_log = tmp_path / "server.log"
    other_log.write_text("INFO fine\nWARN pan=6011111111111117\n")
    hits = scan_cards(s, [], [other_log])
    assert len(hits) == 4, hits
    assert any(h.startswith("run.log:") for h in hits) and any(h.startswith("server.log:2") for h in hits)
    assert any("notifications.db:customers" in h for h in hits) and any(h.startswith("maildir/") for h in hits)
    assert _measure(s).card_numbers == 3  # measure scans the data dir only


def test_a_service_that_never_applied_an_event_counts_as_lost(
        embedded_runs: tuple[Path, list[tuple[int, ...]]], tmp_path: Path) -> None:
    s = _copy(embedded_runs[0], tmp_path / "data")
    with sqlite3.connect(s.data_dir / "analytics.db") as conn:
        # an outbox event (a legacy envelope published before its canonical event is applied, not absorbed)
        conn.execute("DELETE FROM processed_events WHERE rowid = (SELECT MIN(rowid) FROM processed_events"
                     " WHERE outcome = 'applied' AND event_type = 'PaymentInitiated')")
    r = _measure(s)
    assert (r.lost, r.duplicated, r.order_violations, r.ledger_imbalance) == (1, 0, 0, 0), r.details


def test_a_second_effect_counts_as_duplicated(embedded_runs: tuple[Path, list[tuple[int, ...]]],
                                              tmp_path: Path) -> None:
    s = _copy(embedded_runs[0], tmp_path / "data")
    with sqlite3.connect(s.data_dir / "notifications.db") as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(notifications)")]
        row = list(conn.execute("SELECT * FROM notifications WHERE status = 'sent' LIMIT 1").fetchone())
        row[cols.index("event_id")] = "00000000-0000-4000-8000-000000000001"
        conn.execute(f"INSERT INTO notifications VALUES ({', '.join('?' * len(row))})", row)
    r = _measure(s)
    assert (r.lost, r.duplicated, r.order_violations, r.ledger_imbalance) == (0, 1, 0, 0), r.details


def test_an_offset_applied_out_of_order_counts(embedded_runs: tuple[Path, list[tuple[int, ...]]],
                                              tmp_path: Path) -> None:
    s = _copy(embedded_runs[0], tmp_path / "data")
    with sqlite3.connect(s.data_dir / "invoices.db") as conn:
        (a, oa), (b, ob) = conn.execute(
            "SELECT rowid, offset_no FROM processed_events WHERE partition_no = (SELECT partition_no FROM"
            " processed_events ORDER BY rowid LIMIT 1) ORDER BY rowid LIMIT 2").fetchall()
        conn.execute("UPDATE processed_events SET offset_no = -1 WHERE rowid = ?", (a,))
        conn.execute("UPDATE processed_events SET offset_no = ? WHERE rowid = ?", (oa, b))
        conn.execute("UPDATE processed_events SET offset_no = ? WHERE rowid = ?", (ob, a))
    r = _measure(s)
    assert r.order_violations == 1 and (r.lost, r.duplicated, r.ledger_imbalance) == (0, 0, 0), r.details


def test_cash_off_by_one_minor_unit_counts_as_ledger_imbalance(
        embedded_runs: tuple[Path, list[tuple[int, ...]]], tmp_path: Path) -> None:
    s = _copy(embedded_runs[0], tmp_path / "data")
    with sqlite3.connect(s.data_dir / "payments.db") as conn:  # a final payment changed around its triggers
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'payments'"
                                    ).fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE payments SET amount_minor = amount_minor + 1 WHERE payment_id = (SELECT payment_id"
                     " FROM payments WHERE state = 'processed' LIMIT 1)")
    r = _measure(s)
    assert r.ledger_imbalance == 1 and (r.lost, r.duplicated, r.order_violations) == (0, 0, 0), r.details


@pytest.mark.kafka
def test_one_kafka_run_with_a_broker_and_workers_killed_comes_out_all_zeros(tmp_path: Path) -> None:
    seed = _seed()
    proc, lines = _soak(tmp_path / "soak", "--runs", "1", "--payments", "100", "--seed", str(seed),
                        "--transport", "kafka")
    if proc.returncode != 0 and "kafka:" in proc.stderr and not lines:
        from ci_rule import missing

        missing(f"a three-node Apache Kafka cluster ({proc.stderr.strip().splitlines()[-1]})")
    assert proc.returncode == 0, f"seed {seed}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    [(_i, _s, events, payments, hostile, kills, *figures)] = lines
    assert payments == 100 and events >= 300 and hostile >= 8 and kills >= 1
    assert "(+1 broker, " in proc.stdout
    assert figures == [0, 0, 0, 0, 0]


def test_a_run_through_a_full_disk_comes_out_all_zeros_and_leaves_no_stray_files(tmp_path: Path) -> None:
    """The run's data dir is a filesystem of its own, filled to the last byte for 3-6 s a third of the way through
    the writes, with a worker killed meanwhile: every write of every process (stores, channel, mail, logs, status
    files; the supervisor's too) fails with ENOSPC for a while, and nothing is lost or half-written for it."""
    if os.geteuid() != 0:
        from ci_rule import missing

        missing("root (to mount the run's tmpfs)")
    seed = _seed()
    root = tmp_path / "soak"
    proc, lines = _soak(root, "--runs", "1", "--payments", "150", "--seed", str(seed), "--full-disk")
    assert proc.returncode == 0, f"seed {seed}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    [(_i, _s, events, payments, _hostile, kills, *figures)] = lines
    assert payments == 150 and events >= 3 * payments and kills >= 1 and figures == [0, 0, 0, 0, 0]
    assert "+1 full disk" in proc.stdout and "freed the disk" in proc.stdout
    run = root / "run-0"
    assert os.listdir(run / "maildir" / "tmp") == []  # no part-written e-mail
    assert [p.name for p in (run / "workers").iterdir() if p.name.endswith(".tmp")] == []
    assert not (run / "ballast").exists()


def test_the_scan_tells_a_unix_time_in_a_broker_log_from_a_card_number(tmp_path: Path) -> None:
    """Kafka's server.log writes times in milliseconds: 13 digits that passed the Luhn check one time in ten and
    were taken for card numbers; the card guard now knows better (only Visa issued 13 digits, starting with 4)."""
    import time

    from payevents.contracts.cardguard import contains_card_number

    now = int(time.time() * 1000)
    times = [now + i for i in range(200)]
    assert not any(contains_card_number(f"at {ms}") for ms in times)
    log = tmp_path / "server.log"
    log.write_text("".join(f"[2026-11-30] INFO loaded producer state at {ms} (kafka.log.UnifiedLog)\n"
                           f"heartbeatAt {ms / 1000:.7f}\n" for ms in times))
    s = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    assert scan_cards(s, [], [log]) == []
    with log.open("a") as f:
        f.write("card 4111111111111111 at 1796080749346\n")
    assert [h.split(":")[:2] for h in scan_cards(s, [], [log])] == [["server.log", str(2 * len(times) + 1)]]


def test_the_command_exits_1_when_any_figure_is_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from payevents.bench import soak as soak_module
    from payevents.faces.cli import app

    figures = iter([RunResult(index=0, seed=5, events=10, kills=2),
                    RunResult(index=1, seed=6, events=10, duplicated=1)])

    def fake(runs: int, payments: int, seed: int, **kwargs: object) -> list[RunResult]:
        return [next(figures) for _ in range(runs)]

    monkeypatch.setattr(soak_module, "soak", fake)
    runner = CliRunner()
    ok = runner.invoke(app, ["soak", "--runs", "1", "--seed", "5"])
    assert ok.exit_code == 0 and "— ok" in ok.output
    bad = runner.invoke(app, ["soak", "--runs", "1", "--seed", "6"])
    assert bad.exit_code == 1 and "duplicated effects 1" in bad.output and "FAILED" in bad.output


@pytest.mark.postgres
def test_a_postgresql_run_with_its_connections_cut_comes_out_all_zeros_and_is_scanned(pg_available: str,
                                                                                     tmp_path: Path) -> None:
    """Besides the worker kills, every connection of the run (workers and writer) is cut at least once (a database
    restart as the clients see it), and the card scan reads the run's schemas."""
    import sqlalchemy as sa

    from payevents.bench.core import drop_schemas

    def schemas() -> set[str]:
        engine = sa.create_engine(pg_available)
        with engine.connect() as conn:
            names = set(conn.exec_driver_sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'soak%%'")
                        .scalars())
        engine.dispose()
        return names

    before = schemas()
    seed = _seed()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAYEVENTS_SOAK_PG_URL", pg_available)  # the database the command uses
        proc, lines = _soak(tmp_path / "soak", "--runs", "1", "--payments", "80", "--seed", str(seed),
                            "--database", "postgresql")
    [prefix] = {n.rsplit("_", 1)[0] + "_" for n in schemas() - before if n.endswith("_payments")}
    try:
        assert proc.returncode == 0, f"seed {seed}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        [(_i, _s, events, _payments, hostile, kills, *figures)] = lines
        assert events >= 240 and hostile >= 8 and kills >= 1 and figures == [0, 0, 0, 0, 0]
        assert re.search(r"kills \(\+[1-9]\d* database, ", proc.stdout), proc.stdout
        s = Settings(env="dev", data_dir=tmp_path / "soak" / "run-0", database_url=pg_available,  # type: ignore[arg-type]
                     db_schema_prefix=prefix)
        assert scan_cards(s, [], []) == []
        engine = sa.create_engine(pg_available)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE \"{prefix}notifications\".customers SET name = 'Ada 4111 1111 1111 1111'"
                                 " WHERE customer_id = 'cus_soak_ada'")
        engine.dispose()
        assert scan_cards(s, [], []) == [f"{prefix}notifications.customers.name"]
    finally:
        dispose_engines()
        drop_schemas(pg_available, prefix)


def test_a_batch_of_marks_is_read_in_the_order_written_wherever_its_rows_lie(store_settings: Settings) -> None:
    """The order check reads each service's marks in the order they were written. The marks of one batch share
    their ``applied_at``; on PostgreSQL a row's physical place (``ctid``) is not the order it was written in —
    an UPDATE (a rejected event evaluated again) or a slot freed by a rolled-back batch puts it elsewhere — so
    the soak reported offsets of one batch "applied after" each other that the runtime applied in order."""
    import sqlalchemy as sa

    from payevents.bench.soak import _marks
    from payevents.runtime.consumer import migrate_runtime
    from payevents.store import db

    engine = db.engine_for(store_settings, "ledger")
    migrate_runtime(engine)
    insert = sa.text("INSERT INTO processed_events (service, event_id, event_type, outcome, topic, partition_no,"
                     " offset_no, applied_at) VALUES ('ledger', :e, 'PaymentProcessed', 'applied',"
                     " 'payments.dev.events', 0, :o, :at)")
    with engine.begin() as conn:  # one batch: offsets 0..9 at one time
        conn.execute(insert, [{"e": f"e{o}", "o": o, "at": "2026-12-01T17:46:10.936660+00:00"} for o in range(10)])
    with engine.begin() as conn:  # the next batch
        conn.execute(insert, [{"e": "e10", "o": 10, "at": "2026-12-01T17:46:11.065475+00:00"}])
    with engine.begin() as conn:  # PostgreSQL writes the row's new version elsewhere in the table
        conn.execute(sa.text("UPDATE processed_events SET reason = NULL WHERE offset_no = 0"))
    assert [offset for _e, _outcome, _p, offset in _marks(store_settings, "ledger")] == list(range(11))
