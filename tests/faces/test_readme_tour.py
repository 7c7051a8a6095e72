"""The README's tour runs literally, top to bottom, on a fresh clone after ``make demo``.

Every ```console block of the "A tour" section is a list of ``$ command`` lines, each followed by the output
the README shows. The test clones the repository, runs ``make demo`` in the clone (its ``.venv`` is this
checkout's), then runs every command in order in one bash session (so ``export`` and background jobs carry
over, as in a terminal) and compares each command's output with the README's: ``...`` inside a line matches
any text, a line of only ``...`` matches any number of lines, trailing spaces are ignored.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "@@tour-step-{}@@"


def tour_steps(readme: str) -> list[tuple[str, list[str]]]:
    start = readme.index("\n## A tour")
    end = readme.index("\n## ", start + 1)
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", readme[start:end], re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    parts = []
    for line in expected:
        line = line.rstrip()
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(p) for p in line.split("...")) + r"\n")
    text = "".join(a.rstrip() + "\n" for a in actual)
    return re.fullmatch("".join(parts), text) is not None


def test_the_tour_parser_and_matcher() -> None:
    readme = "x\n## A tour\n```console\n$ echo a\na\n$ true\n```\n```sh\n$ not me\n```\n## Next\n"
    assert tour_steps(readme) == [("echo a", ["a"]), ("true", [])]
    assert matches(["ok ... done", "...", "end"], ["ok 1 2 done", "x", "y", "end"])
    assert matches(["..."], [])
    assert not matches(["ok"], ["ok", "extra"])
    assert not matches(["a ... b"], ["a c"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    clone = tmp_path / "payevents"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for name in ("README.md", "docs/tour"):  # the working tree's tour, also before it is committed
        src, dst = ROOT / name, clone / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
    # the clone shares this checkout's .venv: `-o` keeps make from reinstalling it from the clone (which would
    # point the editable install at a temporary folder)
    demo = subprocess.run(["make", "-o", ".venv/.stamp-run", "demo"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]

    steps = tour_steps((clone / "README.md").read_text())
    assert len(steps) >= 10, "the tour has lost its commands"
    script = ["exec 2>&1"]
    for i, (command, _) in enumerate(steps):
        script += [f"echo '{MARK.format(i)}'", command]
    script += ["kill $(jobs -p) 2>/dev/null", "wait 2>/dev/null"]
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=480)
    chunks = re.split(r"@@tour-step-(\d+)@@\n", proc.stdout)
    outputs = {int(chunks[i]): chunks[i + 1] for i in range(1, len(chunks) - 1, 2)}
    for i, (command, expected) in enumerate(steps):
        assert i in outputs, f"the tour stopped before step {i}: $ {command}\n{proc.stdout[-2000:]}"
        actual = outputs[i].splitlines()
        assert matches(expected, actual), (
            f"step {i}: $ {command}\n--- the README shows:\n" + "\n".join(expected)
            + "\n--- it printed:\n" + "\n".join(actual))
