"""The local broker's JVM compiles with C1 only (its C2 compiler threads took a share of the two cores the broker
shares with the services under test), unless ``PAYEVENTS_KAFKA_JVM_OPTS`` says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import payevents.localkafka as lk
from payevents.errors import ConfigError


def _thread_names(pid: int) -> set[str]:
    names = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            names.add(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip())
        except OSError:  # a thread that ended meanwhile
            continue
    return names


def test_the_session_broker_runs_without_the_c2_compiler(kafka_session: lk.LocalKafka) -> None:
    node = kafka_session.nodes[0]
    assert node.proc is not None
    names = _thread_names(node.proc.pid)
    assert any(n.startswith("C1 Compiler") for n in names), sorted(names)
    assert not any(n.startswith("C2 Compiler") for n in names), sorted(names)


def _command(tmp_path: Path) -> list[str]:
    node = lk.KafkaNode(1, tmp_path, 9092, 9093)
    return node.java(tmp_path / "libs", "kafka.Kafka", "server.properties")


def test_the_environment_replaces_the_jvm_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lk.JVM_OPTIONS_ENV, raising=False)
    assert "-XX:TieredStopAtLevel=1" in _command(tmp_path)

    monkeypatch.setenv(lk.JVM_OPTIONS_ENV, "")  # the JVM's own defaults: both compilers
    assert not any(a.startswith("-XX:TieredStopAtLevel") for a in _command(tmp_path))

    monkeypatch.setenv(lk.JVM_OPTIONS_ENV, "-XX:+UseSerialGC '-Dpayevents.note=a b'")
    command = _command(tmp_path)
    assert command[command.index("-XX:+UseSerialGC") + 1] == "-Dpayevents.note=a b"
    assert command.index("-XX:+UseSerialGC") < command.index("kafka.Kafka")

    monkeypatch.setenv(lk.JVM_OPTIONS_ENV, "-Dx='unclosed")
    with pytest.raises(ConfigError, match=lk.JVM_OPTIONS_ENV):
        _command(tmp_path)
