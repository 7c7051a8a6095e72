"""Worker metrics and supervision in-process: lag series follow the partitions a member holds; a worker
whose configuration cannot work is reported, not restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import runtime_counter as rc
from prometheus_client import REGISTRY

from payevents.contracts.channel import topic_for
from payevents.runtime import runner
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.service import ServiceDef
from payevents.runtime.workers import read_registry
from payevents.settings import Settings


def _lag_partitions(service: str) -> set[str]:
    return {s.labels["partition"] for m in REGISTRY.collect() if m.name == "payevents_consumer_lag"
            for s in m.samples if s.labels.get("service") == service}


def test_lag_series_of_a_lost_partition_is_removed(settings: Settings, counter: ServiceDef) -> None:
    rc.send(settings, [rc.event_record(settings, f"PAY-LAG-{i}")[0] for i in range(12)])
    with ConsumerRuntime(settings, counter, poll_timeout=0.1) as rt:
        rt.step()
        rt._update_lag(force=True)
        assert _lag_partitions(counter.name) == {str(p) for p in range(settings.partitions)}
        topic = topic_for(settings.env)
        kept = {(topic, 0): 3, (topic, 1): 0}
        rt.consumer.lag = lambda: kept  # type: ignore[method-assign]  # a rebalance took partitions 2..5
        rt._update_lag(force=True)
        assert _lag_partitions(counter.name) == {"0", "1"}
        assert REGISTRY.get_sample_value("payevents_consumer_lag", {"service": counter.name, "partition": "0"}) == 3


def test_a_worker_that_cannot_be_configured_is_not_restarted(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # an exporter that is not installed is found by the worker itself (its tracing): a ConfigError in the worker,
    # exit 78, no restart
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "no-such-exporter")
    exits = runner.run_workers(settings, ["ledger"], report=False)
    assert [(e.exitcode, e.restarts) for e in exits] == [(runner.EXIT_CONFIG, 0)]
    (view,) = read_registry(settings)
    assert view.state == "failed" and not view.alive and view.exitcode == runner.EXIT_CONFIG


def test_a_service_that_cannot_be_resolved_is_refused_before_any_worker_starts(settings: Settings) -> None:
    # runtime_counter.NAME is a string, not a ServiceDef
    from payevents.errors import ConfigError

    with pytest.raises(ConfigError, match="'runtime_counter:NAME' is a str, not a payevents Service"):
        runner.run_workers(settings, ["runtime_counter:NAME"], report=False)
    assert read_registry(settings) == []


@pytest.mark.parametrize("raw", ["0", "-1", "soon"])
def test_restart_backoff_setting_is_checked(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(runner.RESTART_BACKOFF_ENV, raw)
    with pytest.raises(Exception, match=runner.RESTART_BACKOFF_ENV):
        runner.restart_backoff()


def test_probe_answers_from_the_worker_loops_and_its_store(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import httpx

    from payevents.runtime import workers

    monkeypatch.setattr(workers, "_beats", {})  # beats of other tests in this process are not this worker's
    probe = workers.WorkerProbe(settings, "_probe", 0)
    try:
        base = str(probe.doc["metricsUrl"]).removesuffix("/metrics")
        progress, sample = [time.monotonic()], {"ready": False, "batches": 0}
        probe.progress["consumer"] = lambda: progress[0]
        probe.sampler = lambda: dict(sample)
        probe.store_check = lambda: None
        probe.set_state("running")
        probe.refresh()
        assert httpx.get(f"{base}/livez").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503  # no partitions assigned
        sample.update(ready=True, batches=1)
        probe.refresh()
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert probe.status()["lastBatchAt"] is not None

        def unreachable() -> None:
            raise OSError("store down")

        probe.store_check, probe._store_checked = unreachable, 0.0
        probe.refresh()
        assert httpx.get(f"{base}/readyz").json() == {"ready": False, "state": "running", "detail": "",
                                                      "storeOk": False}
        progress[0] = time.monotonic() - 3600  # the consumer loop stopped making progress
        assert httpx.get(f"{base}/livez").status_code == 503
        probe.write()
        (view,) = workers.read_registry(settings)
        assert view.state == "stuck" and not view.alive
        assert "payevents_worker_ready" in httpx.get(f"{base}/metrics").text
    finally:
        probe.close()
    (view,) = workers.read_registry(settings)
    assert view.state == "stopped" and not view.alive


def test_a_heartbeat_written_while_the_worker_stops_does_not_outlive_its_stopped_state(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The heartbeat thread builds its status document (state "running") and writes it; close() sets "stopped" and
    # writes. When the heartbeat's write lands after close()'s, the file of a worker that stopped cleanly says
    # "running" with a pid that is gone: every reader shows the worker "dead" (seen in a `payevents run` stopped by
    # SIGTERM). The heartbeat here is held inside its write while close() runs.
    import threading

    from payevents.runtime import workers

    real_write = workers._write
    entered, release = threading.Event(), threading.Event()

    def held_write(path: Path, doc: dict[str, Any]) -> None:
        if threading.current_thread().name == "worker-heartbeat" and not entered.is_set():
            entered.set()
            release.wait(30)
        real_write(path, doc)

    monkeypatch.setattr(workers, "_write", held_write)
    probe = workers.WorkerProbe(settings, "_probe", 0)
    probe.set_state("running")
    assert entered.wait(30), "the heartbeat never wrote"
    closing = threading.Thread(target=probe.close)
    closing.start()
    closing.join(1.0)  # close() either finished (its write went first) or waits for the heartbeat's write
    release.set()
    closing.join(30)
    for t in probe._threads:
        t.join(30)
    (view,) = workers.read_registry(settings)
    assert view.state == "stopped" and not view.alive
