"""The delivery worker in its own process (``delivery.run_delivery_process``, the service's background): a
SIGKILL of that process in the middle of a pass loses and duplicates no e-mail in the Maildir; its passes count
in the supervising process's metrics and liveness; it stops with its supervisor."""

from __future__ import annotations

import contextlib
import email
import email.policy
import errno
import mailbox
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest_an import processed

from payevents.runtime import metrics, workers
from payevents.services import notifications
from payevents.services.notifications import delivery
from payevents.services.notifications.handlers import handle_batch
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings
from payevents.store.db import connect, dispose_engines


def _record(settings: Settings, n: int) -> None:
    notifications.add_customer(settings, "cus_1", "Ann", "ann@example.com")
    engine = connect(settings, SERVICE.name, SERVICE.migrations)
    events = [processed(f"pay_{i}", "3.00", "USD", customer_id="cus_1") for i in range(n)]
    for start in range(0, n, 500):
        with engine.begin() as conn:
            handle_batch(conn, [(d, None) for d in events[start:start + 500]])  # type: ignore[misc]
    dispose_engines()  # no pooled connection crosses into the child


def _message_ids(settings: Settings) -> Counter[str]:
    box = mailbox.Maildir(str(notifications.maildir_path(settings)), create=False)
    return Counter(str(email.message_from_bytes(box.get_bytes(k), policy=email.policy.default)["Message-ID"])
                   for k in box.keys())


def _children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "payevents-notifications-delivery"]


def _new_files(settings: Settings) -> int:
    new = notifications.maildir_path(settings) / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


def test_sigkill_of_the_delivery_process_mid_pass_loses_and_duplicates_nothing(settings: Settings) -> None:
    n = 2500
    _record(settings, n)
    stop = threading.Event()
    supervisor = threading.Thread(target=delivery.run_delivery_process, args=(settings, stop),
                                  kwargs={"limit": 1000, "interval_s": 0.1})
    supervisor.start()
    killed = []
    try:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            written = _new_files(settings)
            if 50 <= written < 900:  # in the middle of the first pass: written, not yet marked
                (child,) = _children()
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed.append(written)
            time.sleep(0.002)
        assert killed, "the first pass was never seen in the middle"
        # the supervisor starts another child, which delivers what the killed pass had not claimed
        while notifications.summary(settings)["pending"] > 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children()) == 1
    finally:
        stop.set()
        supervisor.join(60)
    assert not supervisor.is_alive() and not _children()
    summary = notifications.summary(settings)
    assert 0 < summary["pending"] <= 1000  # the killed pass's claims: leased, never marked
    # once the killed pass's lease expires another pass re-sends them: into the Maildir at most once
    later = delivery.datetime.now(delivery.UTC) + timedelta(minutes=2)
    while notifications.deliver_pending(settings, 1000, now=later).claimed:
        pass
    assert notifications.summary(settings)["sent"] == n
    ids = _message_ids(settings)
    assert len(ids) == n and set(ids.values()) == {1}


def test_the_delivery_process_reports_to_its_supervisor_and_stops_with_it(settings: Settings) -> None:
    """Its passes count in the supervisor's metrics, with its own peak memory: 300 MiB held here when it is spawned
    (a fork, then the exec: ``getrusage`` of the child counts them) are not in it."""
    _record(settings, 30)
    held = bytearray(300 << 20)
    for i in range(0, len(held), 4096):  # resident, page by page
        held[i] = 1
    delivery.PEAK_RSS_KB.pop("delivery", None)
    sent_before = metrics.EMAILS.labels(outcome="sent")._value.get()
    workers._beats.pop("delivery", None)
    stop = threading.Event()
    supervisor = threading.Thread(target=SERVICE.background, args=(settings, stop))  # type: ignore[arg-type]
    supervisor.start()
    try:
        deadline = time.monotonic() + 60
        while metrics.EMAILS.labels(outcome="sent")._value.get() < sent_before + 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metrics.EMAILS.labels(outcome="sent")._value.get() == sent_before + 30
        assert "delivery" in workers._beats
        assert len(_children()) == 1
        assert 10 << 10 < delivery.PEAK_RSS_KB["delivery"] < 250 << 10, delivery.PEAK_RSS_KB
        assert metrics.DELIVERY_PEAK_RSS.labels(process="delivery")._value.get() == \
            delivery.PEAK_RSS_KB["delivery"] * 1024
    finally:
        stop.set()
        supervisor.join(30)
    assert not supervisor.is_alive() and not _children()
    assert notifications.summary(settings)["sent"] == 30 and _new_files(settings) == 30
    del held


def _run_counting(settings: Settings, monkeypatch: pytest.MonkeyPatch, spare_cpus: float, **kwargs: float) -> tuple[
        threading.Thread, threading.Event, Counter[str]]:
    """``delivery.run_delivery_processes`` in a thread, counting what each delivery process sent; the host's idle
    CPUs read as ``spare_cpus`` (whatever else the test machine runs meanwhile)."""
    monkeypatch.setattr(delivery.CpuMeter, "spare", lambda self: spare_cpus)
    sent: Counter[str] = Counter()
    counted = delivery.count_pass

    def count(report: delivery.DeliveryReport, component: str = "delivery") -> None:
        sent[component] += report.sent
        counted(report, component)

    monkeypatch.setattr(delivery, "count_pass", count)
    for component in ("delivery", "delivery-2"):
        workers._beats.pop(component, None)
    stop = threading.Event()
    supervisor = threading.Thread(target=delivery.run_delivery_processes, args=(settings, stop), kwargs=kwargs)
    supervisor.start()
    return supervisor, stop, sent


def _delivery_children() -> set[str]:
    return {p.name for p in multiprocessing.active_children() if p.name.startswith("payevents-notifications-")}


@contextlib.contextmanager
def _delivering(settings: Settings, monkeypatch: pytest.MonkeyPatch, n: int, spare_cpus: float,
                deadline: float) -> Iterator[tuple[Settings, Counter[str], set[str], float]]:
    """``n`` pending e-mails delivered by up to two delivery processes (:func:`_run_counting`, passes of 10), the
    host's idle CPUs read as ``spare_cpus``: the block runs once all are sent, with the settings, what each process
    sent, the names of the delivery processes seen so far and the time by which the block must be done; then the
    supervisor is stopped, and it stops."""
    _record(settings, n)
    two = settings.replace(delivery_processes=2)
    supervisor, stop, sent = _run_counting(two, monkeypatch, spare_cpus, limit=10, interval_s=0.05)
    names: set[str] = set()
    try:
        until = time.monotonic() + deadline
        while sum(sent.values()) < n and time.monotonic() < until:
            names |= _delivery_children()
            time.sleep(0.02)
        assert sum(sent.values()) == n
        yield two, sent, names, until
    finally:
        stop.set()
        supervisor.join(60)
    assert not supervisor.is_alive() and not _delivery_children()


def test_a_second_delivery_process_joins_for_a_backlog_and_leaves_once_it_is_gone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PAYEVENTS_DELIVERY_PROCESSES=2``: after full passes in a row (a backlog), with a CPU idle, a second delivery
    child joins; both deliver part of the backlog (their passes reach the supervisor under their own names), every
    e-mail is written once; once a pass of the second finds nothing due it leaves (its liveness beat with it) while
    the first runs on, and the first stops with the supervisor."""
    n = 6000
    with _delivering(settings, monkeypatch, n, 1.0, 180) as (two, sent, names, deadline):
        assert names >= {"payevents-notifications-delivery", "payevents-notifications-delivery-2"}
        assert sent["delivery"] > 0 and sent["delivery-2"] > 0, sent
        while "payevents-notifications-delivery-2" in _delivery_children() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _delivery_children() == {"payevents-notifications-delivery"}
        while "delivery-2" in workers._beats and time.monotonic() < deadline:  # forgotten by its supervising thread
            time.sleep(0.02)
        assert "delivery-2" not in workers._beats and "delivery" in workers._beats
    ids = _message_ids(two)
    assert len(ids) == n and set(ids.values()) == {1}
    assert notifications.summary(two)["sent"] == n


def test_no_second_delivery_process_joins_for_one_full_pass(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full pass followed by one that is not (a burst, not a backlog) starts no second delivery process, though
    two are allowed."""
    _one_process_delivers(settings, monkeypatch, 15, 1.0)


def test_no_second_delivery_process_joins_a_backlog_while_no_cpu_is_idle(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of many full passes, but the host's CPUs busy (less than ``SPARE_CPUS`` idle): the one delivery
    process works through it alone, though two are allowed."""
    _one_process_delivers(settings, monkeypatch, 300, delivery.SPARE_CPUS / 2)


def _one_process_delivers(settings: Settings, monkeypatch: pytest.MonkeyPatch, n: int, spare_cpus: float) -> None:
    with _delivering(settings, monkeypatch, n, spare_cpus, 60) as (_two, sent, names, _deadline):
        for _ in range(20):  # and the passes after it, which find nothing due
            names |= _delivery_children()
            time.sleep(0.02)
    assert names == {"payevents-notifications-delivery"} and set(sent) == {"delivery"}
    assert "delivery-2" not in workers._beats


def test_a_mail_file_the_disk_fills_up_part_way_through_is_not_left_behind(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(settings, 5)
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:  # the first half fits, then ENOSPC
        if len(data) > 64:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(delivery.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        notifications.deliver_pending(settings)
    monkeypatch.undo()
    maildir = delivery.maildir_path(settings)
    assert os.listdir(maildir / "tmp") == [] and _new_files(settings) == 0
    later = delivery.datetime.now(delivery.UTC) + timedelta(minutes=2)
    assert notifications.deliver_pending(settings, now=later).sent == 5
    assert os.listdir(maildir / "tmp") == [] and _new_files(settings) == 5


def test_a_failed_maildir_write_marks_nothing_of_its_pass_and_the_retry_duplicates_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(settings, 40)
    real_write = delivery.MaildirMailer._write
    calls: list[int] = []

    def write_then_fail_once(self: delivery.MaildirMailer, mail: delivery.Outgoing) -> None:
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        real_write(self, mail)

    monkeypatch.setattr(delivery.MaildirMailer, "_write", write_then_fail_once)
    with pytest.raises(OSError, match="No space left"):
        notifications.deliver_pending(settings)
    assert notifications.summary(settings)["pending"] == 40  # the pass's writes are not marked sent
    assert _new_files(settings) == 39
    later = delivery.datetime.now(delivery.UTC) + timedelta(minutes=2)
    assert notifications.deliver_pending(settings, now=later).sent == 40  # retries: linked, or already there
    ids = _message_ids(settings)
    assert len(ids) == 40 and set(ids.values()) == {1}


def test_a_delivery_loop_that_retries_a_store_that_is_down_is_live(settings: Settings) -> None:
    # every pass fails (nothing listens where its database should be): the loop is retrying, not stuck, and its
    # supervising process's /livez must say so, or the supervisor would kill a worker waiting for its database
    down = Settings(env=settings.env, data_dir=settings.data_dir,
                    database_url="postgresql+psycopg://payevents@127.0.0.1:1/payevents")  # type: ignore[arg-type]
    workers._beats.pop("delivery", None)
    stop = threading.Event()
    supervisor = threading.Thread(target=delivery.run_delivery_process, args=(down, stop),
                                  kwargs={"interval_s": 0.05})
    supervisor.start()
    beats: set[float] = set()
    try:
        deadline = time.monotonic() + 60
        while len(beats) < 4 and time.monotonic() < deadline:
            if "delivery" in workers._beats:
                beats.add(workers._beats["delivery"])
            time.sleep(0.05)
    finally:
        stop.set()
        supervisor.join(30)
    assert len(beats) >= 4, "the failing delivery loop's turns did not reach its supervisor's liveness"
    assert not supervisor.is_alive() and not _children()


def test_a_stuck_delivery_child_told_to_stop_exits_after_its_grace(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pass that never ends (its store went silent): the child is told to stop (or its parent dies) and must not
    # outlive the worker it belongs to
    monkeypatch.setattr(delivery, "ORPHAN_GRACE_S", 0.5)
    monkeypatch.setattr(delivery, "run_delivery", lambda *a, **k: threading.Event().wait())
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=delivery._delivery_child,
                        args=(settings, reader, ctx.Queue(), os.getpid(), 20, 0.05, 10))
    child.start()
    try:
        writer.send_bytes(b"stop")
        child.join(60)
        assert child.exitcode == 1, "the stuck delivery child did not exit"
    finally:
        if child.exitcode is None:
            child.kill()
            child.join()


def test_the_cpu_meter_reads_the_idle_cpus_between_two_readings(tmp_path: Path) -> None:
    """``/proc/stat``'s first line (user nice system idle iowait irq softirq steal …) and its per-CPU lines: idle and
    I/O wait ticks over all ticks, times the CPUs; no file, or no time passed: not measurable (None)."""
    stat = tmp_path / "stat"

    def write(user: int, idle: int, iowait: int) -> None:
        stat.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
                        "cpu1 1 2 3 4 5 6 7 8 9 10\nintr 1 2 3\nctxt 5\n")

    write(100, 100, 0)
    meter = delivery.CpuMeter(str(stat))
    write(250, 130, 20)  # 200 ticks: 150 busy, 50 idle or waiting, on 2 CPUs
    assert meter.spare() == pytest.approx(0.5)
    write(250, 330, 20)  # all idle since
    assert meter.spare() == pytest.approx(2.0)
    assert meter.spare() is None  # no tick since the last reading
    assert delivery.CpuMeter(str(tmp_path / "missing")).spare() is None
