"""Smoke tests of the benchmark harness: every suite runs with a tiny N and produces well-formed output.

These never assert on speed: only that the figures exist, are positive, carry their baselines and
targets, and that the JSON and the PNG are written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from payevents.bench import suites
from payevents.bench.core import BenchReport, Figure, finalize, latency_summary, percentile
from payevents.bench.report import print_report, write_json, write_png
from payevents.bench.runner import run_bench, write_outputs


def _by_name(report: BenchReport, suite: str) -> dict[str, Figure]:
    return {f.name: f for f in report.figures if f.suite == suite}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert math.isnan(percentile([], 50))
    s = latency_summary([3.0, 1.0, 2.0])
    assert (s["count"], s["p50"], s["max"]) == (3, 2.0, 3.0)


def test_finalize_computes_ratios_and_targets() -> None:
    r = BenchReport()
    r.add(Figure("baseline", "consume", 1000.0, "events/s", "embedded", "sqlite"))
    fast = r.add(Figure("consume", "ledger", 400.0, "events/s", "embedded", "sqlite", baseline="consume",
                        target=(">=", 0.30, "ratio")))
    slow = r.add(Figure("consume", "invoices", 200.0, "events/s", "embedded", "sqlite", baseline="consume",
                        target=(">=", 0.30, "ratio")))
    lat = r.add(Figure("publish", "delay p99", 60.0, "ms", "embedded", "sqlite", target=("<=", 50.0, "value")))
    finalize(r)
    assert fast.ratio == pytest.approx(0.4) and fast.target_met is True
    assert slow.ratio == pytest.approx(0.2) and slow.target_met is False
    assert lat.ratio is None and lat.target_met is False


def test_baseline_embedded_writes_table_json_and_png(tmp_path: Path) -> None:
    report = run_bench("baseline", ["embedded"], "sqlite", n=300)
    assert not report.errors, report.errors
    figs = _by_name(report, "baseline")
    assert set(figs) == {"produce", "consume"}
    assert all(f.value > 0 and f.n == 300 and f.unit == "events/s" for f in figs.values())
    json_path, png_path = write_outputs(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert {"meta", "figures", "latency_summary", "errors"} <= set(data)
    assert data["meta"]["cores"] and {f["name"] for f in data["figures"]} == {"produce", "consume"}
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print_report(report)


@pytest.mark.kafka
def test_baseline_kafka_on_its_own_apache_kafka() -> None:
    report = run_bench("baseline", ["kafka"], "sqlite", n=200)
    assert not report.errors, report.errors
    figs = _by_name(report, "baseline")
    assert figs["produce"].value > 0 and figs["consume"].value > 0
    assert figs["consume"].transport == "kafka"


def test_consume_suite_reports_every_service_against_its_baseline() -> None:
    report = run_bench("consume", ["embedded"], "sqlite", n=120)
    assert not report.errors, report.errors
    figs = _by_name(report, "consume")
    assert set(figs) == {"ledger", "invoices", "analytics", "notifications"}
    for f in figs.values():
        assert f.value > 0 and f.baseline == "consume" and f.ratio is not None and f.ratio > 0
        assert f.target == (">=", 0.30, "ratio") and f.target_met is not None


def test_publish_suite_measures_throughput_and_delays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(suites, "LOADS", (200,))
    monkeypatch.setattr(suites, "LOAD_SECONDS", 0.25)
    report = run_bench("publish", ["embedded"], "sqlite", n=60)
    assert not report.errors, report.errors
    figs = _by_name(report, "publish")
    assert figs["throughput"].value > 0 and figs["throughput"].ratio is not None
    p50, p99, mx = (figs[f"delay {q} @200/s"].value for q in ("p50", "p99", "max"))
    assert 0 <= p50 <= p99 <= mx
    label = next(k for k in report.latencies if k.endswith("@200/s"))
    n_events = len(report.latencies[label])  # one delay per event the paced writer got written
    assert n_events > 0 and n_events % suites.EVENTS_PER_PAYMENT == 0
    assert write_png(report, tmp_path).exists() and write_json(report, tmp_path).exists()


def test_end_to_end_suite_runs_services_in_processes_and_reports_rss() -> None:
    report = run_bench("end-to-end", ["embedded"], "sqlite", n=40)
    assert not report.errors, report.errors
    figs = _by_name(report, "end-to-end")
    assert figs["payments"].value > 0 and figs["payments"].target == (">=", 3_000.0, "value")
    assert figs["time to last effect"].value > 0
    cpu = figs["CPU per payment"]  # where the cores went: every process of the pipeline named
    assert cpu.value > 0 and cpu.unit == "ms"
    for name in ("writer", "relay", "ledger", "invoices", "analytics", "notifications"):
        assert f"{name} " in cpu.note
    assert figs["publish delay p99"].value > 0 and figs["publish delay p99"].unit == "ms"
    for name in ("ledger", "invoices", "analytics", "notifications"):
        rss = figs[f"peak RSS {name}"]
        assert rss.value > 10 and rss.unit == "MiB"


def test_cli_contracts_and_baseline_write_results(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from payevents.faces.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["bench", "contracts", "--n", "300", "--repeat", "1", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    figs = json.loads((tmp_path / "c" / "bench-results.json").read_text())["figures"]
    decode = next(f for f in figs if f["name"] == "decode+validate")
    assert decode["suite"] == "contracts" and decode["baseline"] == "json parse" and decode["ratio"] > 0
    assert decode["target"] == [">=", 100000.0, "value"] and isinstance(decode["target_met"], bool)
    res = runner.invoke(app, ["bench", "baseline", "--n", "100", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "baseline" in res.output and (tmp_path / "b" / "bench-results.png").exists()
    res = runner.invoke(app, ["bench", "baseline", "--transport", "carrier-pigeon"])
    assert res.exit_code != 0 and "carrier-pigeon" in res.output


def test_drain_suite_reports_all_four_at_n_and_5n_and_every_workers_peak_rss() -> None:
    report = run_bench("drain", ["embedded"], "sqlite", n=60)
    assert not report.errors, report.errors
    figs = _by_name(report, "drain")
    main = figs["all four"]
    assert main.value > 0 and main.baseline == "consume" and main.ratio is not None
    assert main.target == (">=", 5_000.0, "value") and main.target_met is not None
    assert "60 e-mails" in main.note
    assert figs[f"all four @N={60 * suites.DRAIN_GROWTH}"].value > 0
    assert {f"peak RSS {s}" for s in ("ledger", "invoices", "analytics", "notifications")} <= set(figs)
    # what a file cost the filesystem just before each run, next to what the delivery wrote
    raw_file = figs["a Maildir file, raw"]
    assert raw_file.value > 0 and raw_file.unit == "µs CPU" and raw_file.n == suites.DRAIN_RAW_FILES
    assert figs[f"a Maildir file, raw @N={60 * suites.DRAIN_GROWTH}"].value > 0
    # the first run's workers forked from a fork server of its own, whose CPU is counted with theirs
    assert "the workers' fork server" in main.note
    # the same N again with the workers spawned (PAYEVENTS_WORKER_START=spawn), every e-mail written once
    spawned = figs["all four, workers spawned"]
    assert spawned.value > 0 and spawned.n == 60 and "60 e-mails" in spawned.note and spawned.target is None
    assert "fork server" not in spawned.note
    assert figs["a Maildir file, raw, workers spawned"].value > 0


def test_the_raw_maildir_write_leaves_every_file_in_new_and_none_in_tmp(tmp_path: Path) -> None:
    from payevents.bench.baseline import maildir_files

    per_file = maildir_files(tmp_path / "md", 25, size=100)
    assert per_file > 0
    names = sorted(p.name for p in (tmp_path / "md" / "new").iterdir())
    assert names == [f"{i:08d}.raw" for i in range(25)] and not list((tmp_path / "md" / "tmp").iterdir())
    assert {(tmp_path / "md" / "new" / n).stat().st_size for n in names} == {100}


def test_scale_out_suite_runs_one_to_three_members_of_a_group() -> None:
    report = run_bench("scale-out", ["embedded"], "sqlite", n=60)
    assert not report.errors, report.errors
    figs = _by_name(report, "scale-out")
    for k, held in ((1, "[6]"), (2, "[3, 3]"), (3, "[2, 2, 2]")):
        fig = figs[f"ledger ×{k}"]
        assert fig.value > 0 and fig.ratio is not None and fig.n == 60
        assert f"partitions {held}" in fig.note  # the group settled before the channel was filled


def test_the_scale_out_members_read_nothing_until_the_channel_is_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The members hold while the benchmark fills the channel (it ran beside them before, on the cores they were
    measured on): a fill that stays a second after its last record still sees no member read until it is done."""
    import io
    import time

    from rich.console import Console

    from payevents.bench import scaleout
    from payevents.bench.core import bench_env
    from payevents.bench.events import to_records

    fill = suites.send_records

    def slow_fill(settings: object, records: list[object]) -> None:
        fill(settings, records)  # type: ignore[arg-type]
        time.sleep(1.0)  # the records are on the channel: a member stepping now would read them

    monkeypatch.setattr(suites, "send_records", slow_fill)
    with bench_env("embedded", "sqlite") as benv:
        events = suites.shared_events(benv, 200)
        for k in (1, 2):
            rate, note, first = scaleout._once(benv, events, k, to_records, Console(file=io.StringIO()))
            assert rate > 0 and "duplicates 0" in note
            assert first >= 0.0, f"×{k}: a member read {-first:.2f}s before the channel was filled"


def test_scale_out_is_run_by_name_not_by_all() -> None:
    from payevents.bench.runner import EXTRA_SUITES, SUITES

    assert "scale-out" in EXTRA_SUITES and "scale-out" not in SUITES


def test_the_benchmarks_consume_from_kafka_as_a_deployment_does() -> None:
    """The benchmarks' Kafka clients differ from a deployment's (no kafka_config) only in the group-join timings
    the local broker allows: every fetch setting is the deployed default. (With the tests' 10 ms fetch wait, the
    end-to-end run measured a configuration no deployment runs, at ~40 % more of the broker's CPU.)"""
    from payevents.localkafka import FAST_GROUP_CONFIG, bench_kafka_config
    from payevents.transport.kafka import KafkaTransport

    deployed = KafkaTransport("127.0.0.1:9092").consumer_config("g")
    bench = KafkaTransport("127.0.0.1:9092", bench_kafka_config()).consumer_config("g")
    differ = {k for k in deployed.keys() | bench.keys() if deployed.get(k) != bench.get(k)}
    assert differ == {"session.timeout.ms", "heartbeat.interval.ms"}
    tests = KafkaTransport("127.0.0.1:9092", FAST_GROUP_CONFIG).consumer_config("g")
    assert tests["fetch.wait.max.ms"] == "10" != bench["fetch.wait.max.ms"]  # the tests still wait 10 ms at most


def test_an_environment_made_in_a_runs_directory_leaves_its_files_to_the_run(tmp_path: Path) -> None:
    """A run of several environments deletes their files once, at its end: on ext4 without a journal a file
    created within about a minute of many deletions costs up to ten times as much, and the embedded run's clean-up
    came shortly before the Kafka run's drain. Alone, an environment still removes its own."""
    from payevents.bench.core import bench_env

    with bench_env("embedded", parent=tmp_path) as benv:
        (benv.settings.data_dir).mkdir(parents=True)
        (benv.settings.data_dir / "kept").write_text("until the run ends")
        kept = benv.settings.data_dir / "kept"
    assert kept.read_text() == "until the run ends" and kept.is_relative_to(tmp_path)
    with bench_env("embedded") as benv:
        alone = benv.tmp
        assert alone.is_dir()
    assert not alone.exists()


def test_a_run_removes_its_environments_files_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = run_bench("baseline", ["embedded", "embedded"], "sqlite", n=50)
    assert not report.errors, report.errors
    assert list(tmp_path.iterdir()) == []
