"""Workers in processes (several instances of one group) and the channel commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import runtime_counter as rc
from supervising import CLI, cli_env, parent_of
from test_consumer_faults import check_exactly_once, produce, wait_for
from typer.testing import CliRunner

from payevents.runtime import procs, runner
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db


def _refused(args: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    """``payevents run *args``, which must refuse to start with exit code 2: the lines it wrote to stderr, and all
    it wrote (stderr and stdout)."""
    proc = subprocess.run([CLI, "run", *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if line.strip()], proc.stderr + proc.stdout


def test_two_instances_share_the_group_and_stop_cleanly(
    settings: Settings, counter: ServiceDef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYEVENTS_TEST_COUNTER_NAME", counter.name)
    events = produce(settings, 400, "R")
    engine = db.engine_for(settings, counter.name)
    stop, ready = threading.Event(), threading.Event()
    exits: list[runner.WorkerExit] = []
    thread = threading.Thread(target=lambda: exits.extend(runner.run_workers(
        settings, ["runtime_counter:SERVICE"], instances=2, max_batch=20, stop=stop, ready=ready, report=False)))
    thread.start()
    try:
        wait_for(ready.is_set, "both workers up")

        def applied() -> int:
            try:
                return len(rc.counter_rows(engine))
            except Exception:
                return 0

        wait_for(lambda: applied() >= 400, "all events applied by the two members")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert [(e.name, e.instance, e.exitcode) for e in exits] == [
        ("runtime_counter:SERVICE", 0, 0), ("runtime_counter:SERVICE", 1, 0)]
    rows = rc.counter_rows(engine)
    check_exactly_once(rows, events)
    assert len(rows) == 400


def test_expand_all_is_the_relay_and_the_four_services() -> None:
    # the services come from the payevents.services entry points (installed order: by name), the relay first
    everything = runner.expand(["all"])
    assert everything[0] == "relay" and sorted(everything[1:]) == ["analytics", "invoices", "ledger", "notifications"]
    assert runner.expand(["ledger"]) == ["ledger"]
    assert runner.expand(["ledger"], relay=True) == ["relay", "ledger"]
    with pytest.raises(Exception, match="payroll"):
        runner.expand(["payroll"])


def test_channel_commands_show_dead_letters_and_tail(settings: Settings, counter: ServiceDef) -> None:
    from payevents.faces.cli import app
    from payevents.runtime.consumer import ConsumerRuntime

    pay = "PAY-CLI"
    good, ev = rc.event_record(settings, pay, "4.20")
    bad = rc.record(settings, b'{"eventType": "PaymentProcessed"}', pay)
    rc.send(settings, [good, bad])
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        deadline = time.monotonic() + 30
        while rt.stats.consumed < 2 and time.monotonic() < deadline:
            rt.step()
    opts = ["--env", "dev", "--data-dir", str(settings.data_dir)]
    cli = CliRunner()

    out = cli.invoke(app, ["dlq", "list", "--json", *opts])
    assert out.exit_code == 0, out.output
    (letter,) = json.loads(out.output)
    assert letter["service"] == counter.name and letter["key"] == pay
    assert letter["reason"].startswith("invalid:") and "eventId" in letter["reason"]
    assert letter["value"] == '{"eventType": "PaymentProcessed"}'

    out = cli.invoke(app, ["dlq", "show", str(letter["partition"]), str(letter["offset"]), *opts])
    assert out.exit_code == 0 and json.loads(out.output)["originalOffset"] == letter["originalOffset"]

    out = cli.invoke(app, ["tail", "--from-beginning", "--no-follow", "--json", *opts])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert (lines[0]["key"], lines[0]["eventId"], lines[0]["amount"]) == (pay, ev["eventId"], "4.20 USD")
    assert lines[1]["error"] == "EventValidationError"

    # the letter still breaks the contract: re-published, it would only be dead-lettered again
    out = cli.invoke(app, ["dlq", "replay", "--service", counter.name, *opts])
    assert out.exit_code == 0, out.output
    assert f"held back dlq {letter['partition']}@{letter['offset']} ({counter.name}): the channel's rules still " \
           "refuse it: invalid:" in out.output
    assert "0 dead letters re-published, 1 held back" in out.output

    # a service name with a typo matches nothing: said, with the names that do have dead letters
    for command in (["dlq", "list"], ["dlq", "replay"]):
        out = cli.invoke(app, [*command, "--service", f"{counter.name}x", *opts])
        assert out.exit_code == 0, out.output
        assert out.stderr.strip() == (f"no dead letters of service '{counter.name}x'; services with dead letters:"
                                      f" '{counter.name}'")

    out = cli.invoke(app, ["topics", "describe", "--json", *opts])
    described = json.loads(out.output)
    assert described[0]["topic"] == "payments.dev.events" and described[0]["records"] == 2


def _state(pid: int) -> str | None:
    """A process's state letter (None when it is gone)."""
    from payevents.runtime.procs import proc_stat

    fields = proc_stat(pid)
    return None if fields is None else fields[0]


def _delivery_processes(settings: Settings) -> list[int]:
    """The notifications worker's delivery processes, as its status file lists them (forked from the fork server
    like the worker, they are not under it in the process tree)."""
    from payevents.runtime.workers import children_of

    return [child.pid for child in children_of(settings, "notifications", 0)]


def test_a_stuck_delivery_process_takes_its_worker_down_with_it_and_both_are_replaced(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the notifications worker's e-mail delivery runs in a child process; frozen (SIGSTOP), the worker's /livez
    # fails, and the supervisor must kill the child with the worker: killed alone, the worker would leave it
    # stopped for ever, holding its claims
    from payevents.runtime.workers import read_registry

    monkeypatch.setenv("PAYEVENTS_LIVE_AFTER_S", "3")
    monkeypatch.setenv("PAYEVENTS_RESTART_BACKOFF", "0.5")
    stop, ready = threading.Event(), threading.Event()
    exits: list[runner.WorkerExit] = []
    thread = threading.Thread(target=lambda: exits.extend(runner.run_workers(
        settings, ["notifications"], stop=stop, ready=ready, report=False)))
    thread.start()
    child = None
    try:
        wait_for(ready.is_set, "the notifications worker up")
        (view,) = read_registry(settings)
        assert view.pid is not None
        wait_for(lambda: bool(_delivery_processes(settings)), "its delivery process started")
        (child,) = _delivery_processes(settings)
        # forked from the worker's fork server, with its imports done: a sibling of the worker, not its child
        assert child not in procs.descendants(view.pid) and parent_of(child) == parent_of(view.pid)
        os.kill(child, signal.SIGSTOP)
        wait_for(lambda: (v := read_registry(settings)[0]).alive and v.restarts == 1, "the worker replaced", 90)
        assert _state(child) in (None, "Z"), "the frozen delivery process outlived its worker"
        wait_for(lambda: bool(_delivery_processes(settings)) and _delivery_processes(settings) != [child],
                 "a new delivery process")
    finally:
        if child is not None and _state(child) == "T":
            os.kill(child, signal.SIGKILL)
        stop.set()
        thread.join(timeout=90)
    assert [(e.name, e.exitcode, e.restarts) for e in exits] == [("notifications", 0, 1)]


def test_a_second_run_of_the_same_workers_on_one_data_dir_is_refused_and_the_first_goes_on(settings: Settings) -> None:
    # two supervisors of one slot would run two workers under one status file, each heartbeat overwriting the
    # other's (the dashboard and /api/health flip between them); other workers may run beside them
    from payevents.runtime.workers import read_registry

    env = cli_env(settings.data_dir)
    runs = [subprocess.Popen([CLI, "run", "invoices"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)]

    def alive(name: str) -> Any:
        return next((v for v in read_registry(settings) if v.name == name and v.alive), None)

    try:
        wait_for(lambda: alive("invoices") is not None, "the first run's invoices worker")
        first = alive("invoices")
        second = subprocess.run([CLI, "run", "invoices", "analytics"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        assert (f"invoices[0] is already running (worker pid {first.pid}, supervised by pid {runs[0].pid})"
                in second.stderr)
        assert alive("analytics") is None  # refused as a whole: none of its workers started
        runs.append(subprocess.Popen([CLI, "run", "analytics"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: alive("analytics") is not None, "another worker beside the first run")
        now = alive("invoices")
        assert now is not None and (now.pid, now.restarts) == (first.pid, 0)
    finally:
        for run in runs:
            run.terminate()
        for run in runs:
            assert run.wait(timeout=90) == 0


def _payments_with_killers(settings: Settings, counter: ServiceDef, n: int,
                           killers: dict[int, str]) -> tuple[list[dict[str, Any]], Callable[[], int]]:
    """``n`` payments on the channel, the ``i``-th described as ``killers[i]`` (``die``, ``hang``: the counter's
    handler ends its process, or never returns); returns their events and how many the counter applied so far."""
    records, events = [], []
    for i in range(n):
        rec, ev = rc.event_record(settings, f"PAY-K-{i % 3}", f"{i + 1}.00",
                                  description=killers.get(i, "a payment"))
        records.append(rec)
        events.append(ev)
    rc.send(settings, records)
    engine = db.engine_for(settings, counter.name)

    def applied() -> int:
        try:
            return len(rc.counter_rows(engine))
        except Exception:  # its tables are not there before the worker's first start
            return 0

    return events, applied


def test_a_record_that_kills_or_hangs_its_worker_is_dead_lettered_after_three_deaths_and_the_rest_flow(
    store_settings: Settings, counter: ServiceDef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one record ends the worker's process, a later one hangs its handler: each restart meets it again, and
    # without a limit the partition would stop there for ever while the supervisor restarts the worker
    settings = store_settings
    from payevents.runtime.consumer import CRASH_LIMIT
    from payevents.runtime.deadletter import list_dead_letters

    monkeypatch.setenv("PAYEVENTS_TEST_COUNTER_NAME", counter.name)
    monkeypatch.setenv("PAYEVENTS_LIVE_AFTER_S", "2")
    monkeypatch.setenv("PAYEVENTS_RESTART_BACKOFF", "0.05")  # 6 to 8 restarts: doubling from 0.2 s waited up to 51 s
    events, applied = _payments_with_killers(settings, counter, 30, {10: "die", 20: "hang"})
    engine = db.engine_for(settings, counter.name)
    stop, ready = threading.Event(), threading.Event()
    exits: list[runner.WorkerExit] = []
    thread = threading.Thread(target=lambda: exits.extend(runner.run_workers(
        settings, ["runtime_counter:SERVICE"], max_batch=10, stop=stop, ready=ready, report=False)))
    thread.start()
    try:
        wait_for(lambda: applied() == 28, "the 28 other records applied", timeout=240)
    finally:
        stop.set()
        thread.join(timeout=90)
    (exit_,) = exits
    # each record: CRASH_LIMIT deaths counted (one record at a time after a death), and perhaps one before that
    assert exit_.exitcode == 0 and 2 * CRASH_LIMIT <= exit_.restarts <= 2 * (CRASH_LIMIT + 1)
    letters = {d.event_id: d.reason for d in list_dead_letters(settings, service=counter.name)}
    assert set(letters) == {events[10]["eventId"], events[20]["eventId"]}
    assert all(r.startswith(f"crash-loop: {CRASH_LIMIT} workers died applying this record") for r in letters.values())
    good = [e for i, e in enumerate(events) if i not in (10, 20)]
    check_exactly_once(rc.counter_rows(engine), good)


def test_a_record_that_kills_a_worker_run_alone_is_dead_lettered_after_three_deaths(
    settings: Settings, counter: ServiceDef
) -> None:
    # `payevents run --one` under a supervisor that is not ours (systemd's Restart=on-failure, a pod's restarts):
    # nobody tells the new process that the one before it died. The store must: without that, each process
    # applies in batches, dies on the same record, and the partition stops there for ever
    from payevents.runtime.consumer import CRASH_LIMIT
    from payevents.runtime.deadletter import list_dead_letters

    env = cli_env(settings.data_dir, PAYEVENTS_TEST_COUNTER_NAME=counter.name,
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    events, applied = _payments_with_killers(settings, counter, 12, {5: "die"})
    engine = db.engine_for(settings, counter.name)
    deaths: list[int] = []
    proc = None
    for _start in range(2 * (CRASH_LIMIT + 2)):  # the outside supervisor: start again whatever ended
        proc = subprocess.Popen([CLI, "run", "--one", "runtime_counter:SERVICE", "--max-batch", "4"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and applied() < 11:
            time.sleep(0.2)
        if proc.poll() is None:
            break
        deaths.append(proc.returncode)
    assert proc is not None
    try:
        assert applied() == 11, f"the partition stopped at the record that kills its worker: exits {deaths}"
    finally:
        if proc.poll() is None:
            proc.terminate()
        assert proc.wait(timeout=90) == 0  # SIGTERM: a clean stop
    # the first death in a batch, then one at a time: CRASH_LIMIT deaths counted on the record
    assert deaths == [3] * (CRASH_LIMIT + 1)
    letters = {d.event_id: d.reason for d in list_dead_letters(settings, service=counter.name)}
    assert list(letters) == [events[5]["eventId"]]
    assert letters[events[5]["eventId"]].startswith(f"crash-loop: {CRASH_LIMIT} workers died applying this record")
    check_exactly_once(rc.counter_rows(engine), [e for i, e in enumerate(events) if i != 5])


def test_only_a_member_that_did_not_stop_cleanly_makes_its_next_start_careful(settings: Settings,
                                                                               counter: ServiceDef) -> None:
    from payevents.runtime.consumer import ConsumerRuntime

    def start(instance: int = 0) -> ConsumerRuntime:
        return ConsumerRuntime(settings, counter, max_batch=10, poll_timeout=0.1, instance=instance)

    first = start()
    assert not first.after_crash  # a member never run before
    first.close()
    second = start()
    assert not second.after_crash  # the one before stopped cleanly
    second.close(clean=False)  # as run() closes on an exception: the member's next start suspects its records
    other = start(instance=1)
    assert not other.after_crash  # another member of the group is not suspected for it
    other.close()
    with pytest.raises(RuntimeError), start() as third:
        assert third.after_crash
        raise RuntimeError("the handler's process is going down")
    fourth = start()  # `with` left on an exception: not clean either
    assert fourth.after_crash
    fourth.close()
    fifth = start()
    assert not fifth.after_crash
    fifth.close()


@pytest.mark.parametrize(("name", "value", "says"), [
    ("PAYEVENTS_LIVE_AFTER_S", "soon", "PAYEVENTS_LIVE_AFTER_S: 'soon' is not a number of seconds"),
    ("PAYEVENTS_LIVE_AFTER_S", "0", "PAYEVENTS_LIVE_AFTER_S: '0' must be positive"),
    ("PAYEVENTS_METRICS_PORT", "99999", "PAYEVENTS_METRICS_PORT: '99999' is not a port (0 to 65535)"),
    ("PAYEVENTS_METRICS_PORT", "http", "PAYEVENTS_METRICS_PORT: 'http' is not a port (0 to 65535)"),
    ("PAYEVENTS_RESTART_BACKOFF", "-1", "PAYEVENTS_RESTART_BACKOFF: '-1' must be positive"),
    ("PAYEVENTS_RESTART_BACKOFF", "1e300", "PAYEVENTS_RESTART_BACKOFF: '1e300' must be at most 3600 s"),
    ("PAYEVENTS_LIVE_AFTER_S", "nan", "PAYEVENTS_LIVE_AFTER_S: 'nan' must be positive"),
    ("PAYEVENTS_LIVE_AFTER_S", "inf", "PAYEVENTS_LIVE_AFTER_S: 'inf' must be at most 86400 s"),
    ("PAYEVENTS_LOG_LEVEL", "LOUD", "PAYEVENTS_LOG_LEVEL: 'LOUD' must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    # a data dir that is a file: every worker crashed on it and was restarted for ever
    ("PAYEVENTS_DATA_DIR", "/dev/null", "PAYEVENTS_DATA_DIR (--data-dir): cannot use /dev/null: File exists"),
    ("PAYEVENTS_DATABASE_URL", "mysql://app:s3cr3t@db/pay",
     "PAYEVENTS_DATABASE_URL: mysql:// is not supported (postgresql+psycopg://user@host/db, or unset: SQLite"),
])
@pytest.mark.parametrize("one", [True, False], ids=["one", "supervised"])
def test_a_bad_setting_is_one_line_naming_it_and_the_rule_before_anything_starts(
        tmp_path: Path, name: str, value: str, says: str, one: bool) -> None:
    lines, output = _refused([*(["--one"] if one else []), "ledger"], cli_env(tmp_path, **{name: value}))
    assert lines == [f"error: {says}" + lines[0][len("error: ") + len(says):]] and says in lines[0], output
    assert "s3cr3t" not in output


@pytest.mark.parametrize("one", [True, False], ids=["one", "supervised"])
def test_a_worker_whose_service_cannot_work_with_the_settings_does_not_start(tmp_path: Path, one: bool) -> None:
    # a malformed SMTP URL: the notifications worker started, and its delivery logged a traceback every 2 s for
    # ever while the confirmations piled up
    lines, output = _refused([*(["--one"] if one else []), "notifications"],
                             cli_env(tmp_path, PAYEVENTS_SMTP_URL="http://mail:s3cr3t@x"))
    assert lines == ["error: PAYEVENTS_SMTP_URL: scheme 'http' must be smtp or smtps"], output
    assert "s3cr3t" not in output
