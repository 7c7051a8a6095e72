"""A consistent CLI (issue #13): one ``--output table|json`` option wherever a command prints data, its choices
in ``--help``; an unreachable database or broker is one line and exit 3 with ``--output json`` too."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from payevents.faces.cli import app

NO_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
NO_BROKER = "kafka://127.0.0.1:1"


def _commands() -> Iterator[tuple[list[str], Any]]:
    def walk(c: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        subs = getattr(c, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, c

    yield from walk(typer.main.get_command(app), [])


def _visible(cmd: Any) -> set[str]:
    return {o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts}


#: commands that print data: each has --output (the demo's --json PATH writes a file and is not a format)
PRINTING = {
    "workers", "tail", "topics describe", "dlq list", "outbox set-aside", "audit verify",
    "payments create", "payments authorize", "payments capture", "payments complete", "payments fail",
    "payments show", "payments list", "ledger journal", "ledger balances", "ledger verify",
    "invoices create", "invoices show", "invoices list", "invoices unapplied", "invoices credits",
    "analytics report", "analytics metrics", "notifications list", "notifications summary", "customers list",
    "customers show", "bench contracts",
}


def test_every_printing_command_has_one_output_option_and_no_other_format_flag() -> None:
    seen = set()
    for path, cmd in _commands():
        name = " ".join(path)
        visible = _visible(cmd)
        assert "--format" not in visible and not (name != "demo" and "--json" in visible), \
            f"{name}: an ad-hoc format flag is visible ({sorted(visible)})"
        if name in PRINTING:
            seen.add(name)
            [opt] = [p for p in cmd.params if "--output" in p.opts]
            choices = {m.value for m in opt.type_descriptor.annotation}  # type: ignore[attr-defined]
            assert {"table", "json"} <= choices, name
            assert opt.default == "table", name
    assert seen == PRINTING


def test_help_lists_the_choices() -> None:
    runner = CliRunner()
    for args in (["payments", "list"], ["ledger", "balances"], ["analytics", "report"], ["topics", "describe"]):
        out = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert out.exit_code == 0, out.output
        assert "--output" in out.output and "table|" in out.output and "json" in out.output, out.output


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "payevents"), *args, "--env", "dev",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)


def test_output_json_is_json_and_the_old_flags_still_work(tmp_path: Path) -> None:
    out = _cli("payments", "list", "--output", "json", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    legacy = _cli("payments", "list", "--json", data_dir=tmp_path)
    assert legacy.returncode == 0 and json.loads(legacy.stdout) == []
    table = _cli("payments", "list", "--output", "table", data_dir=tmp_path)
    assert table.returncode == 0 and not table.stdout.lstrip().startswith("[")
    bad = _cli("payments", "list", "--output", "yaml", data_dir=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    metrics = _cli("analytics", "metrics", "--output", "json", data_dir=tmp_path)
    assert metrics.returncode == 0 and isinstance(json.loads(metrics.stdout), dict)
    assert _cli("analytics", "metrics", "--format", "json", data_dir=tmp_path).stdout == metrics.stdout


STORE_READERS = [
    ["payments", "list"], ["payments", "show", "pay_x"], ["ledger", "journal"], ["ledger", "balances"],
    ["ledger", "verify"], ["invoices", "list"], ["invoices", "show", "INV-x"], ["invoices", "unapplied"],
    ["invoices", "credits"], ["analytics", "report", "--from", "2026-01-01", "--to", "2026-01-31"],
    ["analytics", "metrics"], ["notifications", "list"], ["notifications", "summary"], ["customers", "list"],
    ["customers", "show", "cus_x"], ["outbox", "set-aside"], ["audit", "verify"],
]


@pytest.mark.parametrize("args", STORE_READERS, ids=[" ".join(a[:2]) for a in STORE_READERS])
def test_unreachable_database_with_output_json_is_one_line_and_exit_3(args: list[str], tmp_path: Path) -> None:
    out = _cli(*args, "--output", "json", "--database-url", NO_DATABASE, data_dir=tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: database unreachable:")


@pytest.mark.parametrize("args", [["topics", "describe"], ["dlq", "list"]], ids=["topics", "dlq"])
def test_unreachable_broker_with_output_json_is_one_line_and_exit_3(args: list[str], tmp_path: Path) -> None:
    out = _cli(*args, "--output", "json", "--broker", NO_BROKER, data_dir=tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: broker unreachable:")


@pytest.mark.parametrize("args", [["serve", "--env", "dev", "--port", "99999"], ["demo", "--port", "70000"],
                                  ["kafka", "up", "--port", "65536"],
                                  ["run", "ledger", "--env", "dev", "--metrics-port", "65536"]])
def test_a_port_out_of_range_is_refused_naming_the_option(args: list[str], tmp_path: Path) -> None:
    # `payevents serve --port 99999` was an OverflowError traceback from the socket's bind
    result = CliRunner().invoke(app, args, env={"PAYEVENTS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for" in text and args[-2] in text and "65535" in text, result.output


@pytest.mark.parametrize("args", [["payments", "list"], ["dlq", "list"], ["ledger", "balances"]])
def test_a_data_dir_that_is_a_file_is_one_line_naming_it(args: list[str], tmp_path: Path) -> None:
    # was a FileExistsError traceback from the first store's mkdir
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    out = _cli(*args, data_dir=blocker)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: {blocker}: File exists"], out.stderr
