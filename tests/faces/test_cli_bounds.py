"""Every integer a command takes has a lower and an upper bound (``runtime.limits``): a number without one reached
a store as an OverflowError traceback (``payments list --limit 100000000000000000000``, ``outbox resend
99999999999999999999999``) or started what it asked for (``run ledger --instances 100000``). This walks every
command, so a new option cannot come without its bounds."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from payevents.errors import ConfigError
from payevents.faces.cli import app
from payevents.runtime.consumer import ConsumerRuntime
from payevents.services import load_service
from payevents.settings import Settings


def _has_number(annotation: Any) -> bool:
    return annotation in (int, float) or any(_has_number(a) for a in typing.get_args(annotation))


def _number_params() -> list[tuple[str, str, Any, Any]]:
    found: list[tuple[str, str, Any, Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
            return
        for param in command.params:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and _has_number(descriptor.annotation):
                found.append((" ".join(path), str(param.name), param.min, param.max))

    walk(typer.main.get_command(app), [])
    return found


def test_every_number_a_command_takes_has_both_bounds() -> None:
    params = _number_params()
    assert len(params) >= 30  # the walk found the commands' integers
    assert {"lag wait", "soak drain_timeout"} <= {f"{p[0]} {p[1]}" for p in params}  # and their seconds
    assert [p for p in params if p[2] is None or p[3] is None] == []


@pytest.mark.parametrize("args", [
    ["payments", "list", "--limit", "100000000000000000000"],
    ["invoices", "list", "--limit", "100000000000000000000"],
    ["outbox", "resend", "99999999999999999999999"],
    ["dlq", "show", "0", "99999999999999999999999"],
    ["run", "ledger", "--instances", "65"],  # one above the bound: never a fork bomb should the bound go
    ["run", "ledger", "--one", "--max-batch", "100000000"],
    # `lag --wait nan` waited for ever for a lag that was not 0 (no time is past NaN), 1e300 as good as
    ["lag", "--wait", "nan"],
    ["lag", "--wait", "1e300"],
    ["lag", "--wait", "-1"],
])
def test_a_number_out_of_bounds_is_a_usage_error_naming_the_parameter(args: list[str], tmp_path: Path) -> None:
    out = CliRunner().invoke(app, [*args, "--env", "dev", "--data-dir", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and "OverflowError" not in out.output
    assert ("less than or equal to" in out.output or "must be a whole number" in out.output
            or "greater than or equal to" in out.output or "must be a number" in out.output), out.output


def test_a_nan_is_outside_every_range() -> None:
    out = CliRunner().invoke(app, ["soak", "--drain-timeout", "nan"])
    assert out.exit_code == 2 and "Invalid value for '--drain-timeout'" in out.output, out.output


def test_lag_of_a_service_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    """`payevents lag ledgr` printed `ledgr 209 behind`: the lag of a consumer group nobody runs."""
    cli = str(Path(sys.executable).parent / "payevents")
    out = subprocess.run([cli, "lag", "ledgr", "--env", "dev", "--data-dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: service: 'ledgr' is not one of "), out.stderr
    assert "behind" not in out.stdout


def test_the_runtime_refuses_a_batch_out_of_bounds_for_teams_own_code(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    for bad in (0, 10_001):
        with pytest.raises(Exception, match=f"max_batch: {bad} must be a whole number from 1 to 10,000"):
            ConsumerRuntime(settings, load_service("ledger"), max_batch=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e300, -1.0, 0, "0.5", True])
def test_the_runtime_refuses_a_poll_timeout_it_cannot_wait_for(bad: object, tmp_path: Path) -> None:
    """NaN or 1e300 seconds made the first poll wait for ever, a negative one spun, a string failed in the
    poll's comparison with a TypeError."""
    settings = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"poll_timeout: .* must be a number of seconds from 0\.01 to 60"):
        ConsumerRuntime(settings, load_service("ledger"), poll_timeout=bad)  # type: ignore[arg-type]
