"""The contracts commands through Typer's CliRunner: validate, schema list|show, example, bench contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from contracts_seed import SEED_EXAMPLE_TEXT, channel_sample_bytes, seed_example
from typer.testing import CliRunner

from card_leak import shows_test_card
from payevents.contracts import EVENT_TYPES, legacy_event_id, load_schema
from payevents.faces.commands import bench as bench_commands
from payevents.faces.commands import contracts as contract_commands


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    contract_commands.register(app)
    bench_commands.register(app)
    return app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_a_file(app: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(SEED_EXAMPLE_TEXT)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["ok PaymentProcessed 1.0.0 e7f8a9b0-c1d2-3e4f-5a6b-7c8d9e0f1a2b"]


def test_validate_ndjson_from_stdin_with_legacy_and_errors(app: typer.Typer, runner: CliRunner) -> None:
    bad = seed_example()
    bad["data"]["amount"]["currency"] = "usd"
    bad["data"]["invoiceId"] = None
    lines = [json.dumps(seed_example()), channel_sample_bytes().decode(), json.dumps(bad), "{not json"]
    result = runner.invoke(app, ["validate", "-"], input="\n".join(lines) + "\n")
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert out[0] == "ok PaymentProcessed 1.0.0 e7f8a9b0-c1d2-3e4f-5a6b-7c8d9e0f1a2b"
    assert (
        out[1]
        == f"ok (legacy PAYMENT_PROCESSED 1.0 → PaymentProcessed) {legacy_event_id('PAY-123-456-2024-11-11-99.99')}"
    )
    assert out[2].startswith("error (line 3): ")
    assert "data.amount.currency: 'usd' is not an ISO 4217 code" in out[2]
    assert "data.invoiceId: null is not allowed" in out[2]
    assert out[3].startswith("error (line 4): $: not valid JSON")
    assert len(out) == 4
    assert "4 event(s): 2 ok, 2 failed" in result.stderr


def test_validate_a_json_array_and_a_pretty_document(app: typer.Typer, runner: CliRunner) -> None:
    docs = [seed_example(), seed_example()]
    docs[1]["version"] = "1.0"
    result = runner.invoke(app, ["validate"], input=json.dumps(docs, indent=2))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("ok PaymentProcessed")
    assert result.stdout.splitlines()[1].startswith("error (item 2): version: '1.0'")
    result = runner.invoke(app, ["validate"], input=json.dumps(seed_example(), indent=2))
    assert result.exit_code == 0 and result.stdout.startswith("ok PaymentProcessed 1.0.0")


def test_validate_never_prints_card_digits(app: typer.Typer, runner: CliRunner) -> None:
    doc = seed_example()
    doc["data"]["metadata"]["description"] = "card 4111 1111 1111 1111"
    result = runner.invoke(app, ["validate"], input=json.dumps(doc))
    assert result.exit_code == 1
    assert "data.metadata.description: looks like a card number" in result.stdout
    assert not shows_test_card(result.output)


def test_validate_empty_input_and_missing_file(app: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate"], input="").exit_code == 1
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "missing.json" in result.stderr


def test_schema_list_and_show(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["schema", "list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [*EVENT_TYPES, "PAYMENT_PROCESSED"]
    assert "legacy, read only" in lines[-1]
    result = runner.invoke(app, ["schema", "show", "PaymentProcessed"])
    assert result.exit_code == 0 and json.loads(result.stdout) == load_schema("PaymentProcessed", "1.0.0")
    result = runner.invoke(app, ["schema", "show", "PaymentFailed", "--version", "1.0.0"])
    assert json.loads(result.stdout)["title"] == "PaymentFailed"
    result = runner.invoke(app, ["schema", "show", "PAYMENT_PROCESSED"])
    assert json.loads(result.stdout)["properties"]["version"]["const"] == "1.0"
    result = runner.invoke(app, ["schema", "show", "PaymentProcessed", "--version", "2.0.0"])
    assert result.exit_code == 2 and "no schema for 'PaymentProcessed' version '2.0.0'" in result.stderr


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_output_validates(app: typer.Typer, runner: CliRunner, event_type: str) -> None:
    for args in (["example", event_type], ["example", event_type, "--pretty"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert json.loads(result.stdout)["eventType"] == event_type
        checked = runner.invoke(app, ["validate", "-"], input=result.stdout)
        assert checked.exit_code == 0, checked.output
        assert checked.stdout.startswith(f"ok {event_type} 1.0.0 ")


def test_example_of_unknown_event(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["example", "PaymentRefunded"])
    assert result.exit_code == 2 and "PaymentRefunded" in result.stderr


def test_bench_contracts_prints_figures(app: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "contracts", "--n", "60", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = {f["name"]: f for f in json.loads(result.stdout)["figures"]}
    assert set(figures) == {"decode+validate", "validate+encode", "legacy decode+upcast", "reject invalid"}
    assert figures["decode+validate"]["n"] == 60 and figures["decode+validate"]["perSecondPerCore"] > 0
    text = runner.invoke(app, ["bench", "contracts", "--n", "30", "--repeat", "1", "--out", str(tmp_path)])
    assert text.exit_code == 0, text.output
    assert "decode+validate" in text.stdout and "validate+encode" in text.stdout
    assert (tmp_path / "bench-results.json").exists()


def test_the_real_cli_has_the_commands() -> None:
    from payevents.faces.cli import app as real_app

    result = CliRunner().invoke(real_app, ["validate"], input=SEED_EXAMPLE_TEXT)
    assert result.exit_code == 0 and result.stdout.startswith("ok PaymentProcessed 1.0.0")
