"""Fetching the pinned Apache Kafka (tools/kafka/fetch.sh): a second run downloads nothing, and a missing java or
mvn or a failed download is one line naming what is missing (never a hang, never a skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FETCH = Path(__file__).resolve().parents[2] / "tools" / "kafka" / "fetch.sh"
TOOLS = ("bash", "sed", "sha256sum", "cut", "mkdir", "mktemp", "dirname", "rm", "mv", "touch", "timeout", "cat")


def _path_without(tmp: Path, *, fake: dict[str, str]) -> str:
    """A PATH with the shell tools fetch.sh uses, and ``fake`` commands (name -> script body) instead of the
    real java and mvn (absent unless faked)."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    for name, body in fake.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    return str(bindir)


def _fetch(tmp: Path, fake: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": _path_without(tmp, fake=fake), "HOME": str(tmp), "PAYEVENTS_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run(["bash", str(FETCH)], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_java_is_one_line(tmp_path: Path) -> None:
    proc = _fetch(tmp_path, fake={"mvn": "exit 0"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "java is not installed" in proc.stderr


def test_a_missing_mvn_is_one_line(tmp_path: Path) -> None:
    proc = _fetch(tmp_path, fake={"java": "exit 0"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "mvn (Maven) is not installed" in proc.stderr


def test_a_failed_download_is_one_line_and_leaves_no_half_cache(tmp_path: Path) -> None:
    proc = _fetch(tmp_path, fake={"java": "exit 0", "mvn": "echo 'Could not resolve dependencies' >&2; exit 1"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "could not download Apache Kafka" in proc.stderr and "log:" in proc.stderr
    assert not any((tmp_path / "cache").glob("kafka-*/libs"))


def test_a_second_fetch_downloads_nothing(tmp_path: Path) -> None:
    """Once the jars are cached (make test fetched them), fetch.sh answers from the cache without mvn."""
    first = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=900, check=True)
    libs = Path(first.stdout.strip())
    env = {**os.environ, "PATH": _path_without(tmp_path, fake={"mvn": "echo mvn was called >&2; exit 1",
                                                               "java": "exit 0"})}
    again = subprocess.run(["bash", str(FETCH)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and Path(again.stdout.strip()) == libs and again.stderr == ""
