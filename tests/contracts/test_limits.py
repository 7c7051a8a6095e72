"""Explicit limits: nesting depth and document size are checked up front, never by catching RecursionError;
``payevents validate`` answers every input with a message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from contracts_seed import SEED_EXAMPLE_TEXT
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from payevents.contracts import codec
from payevents.contracts.codec import MAX_DEPTH, MAX_DOCUMENT_BYTES, EventValidationError, decode_event
from payevents.faces.commands import contracts as contract_commands


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return b'{"eventType":"PaymentProcessed","x":' + open_ * depth + close * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 6_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_too_deep_is_a_validation_error_naming_the_limit(depth: int, kind: str) -> None:
    if kind == "array":
        raw = _nested(depth - 1)
    else:
        raw = b'{"eventType":"PaymentProcessed","x":' + b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1) + b"}"
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    (err,) = info.value.errors
    assert err.rule == "depth" and str(MAX_DEPTH) in err.message


def test_size_is_checked_before_depth() -> None:
    with pytest.raises(EventValidationError) as info:
        decode_event(_nested(100_000))
    assert [e.rule for e in info.value.errors] == ["size"]


def test_depth_within_the_limit_is_judged_by_the_schema() -> None:
    raw = _nested(MAX_DEPTH - 1)  # the object itself is one level
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    assert all(e.rule != "depth" for e in info.value.errors)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    ev = json.loads(SEED_EXAMPLE_TEXT)
    ev["data"]["metadata"]["description"] = "[[[{{{" * 200
    assert decode_event(json.dumps(ev).encode()).event.data.metadata.description.startswith("[[[")


def test_too_big_is_rejected_before_parsing() -> None:
    ev = json.loads(SEED_EXAMPLE_TEXT)
    ev["data"]["metadata"]["description"] = "x" * MAX_DOCUMENT_BYTES
    raw = json.dumps(ev).encode()
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    (err,) = info.value.errors
    assert err.rule == "size" and str(len(raw)) in err.message and str(MAX_DOCUMENT_BYTES) in err.message


def test_no_recursion_error_anywhere_in_the_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The precise path is not reached by a too-deep document at all (a RecursionError would be an accident)."""
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("the precise path parsed a too-deep document")

    monkeypatch.setattr(codec, "_precise", boom)
    with pytest.raises(EventValidationError):
        decode_event(_nested(50_000))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    contract_commands.register(app)
    return app


@pytest.mark.parametrize("content", [
    b"[" * 100_000,
    b"{" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    _nested(5_000),
    (b'{"a":1}\n' + b"[" * 100_000 + b"\n"),
    b"\xff\xfe\x00garbage",
    b'"' + b"x" * (MAX_DOCUMENT_BYTES + 10) + b'"',
    b"[" + b",".join([b'"4111 1111 1111 1111"'] * 3) + b"]",
])
def test_validate_never_prints_a_traceback(app: typer.Typer, content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "4111" not in result.output
    assert "error" in result.output


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    | st.sampled_from(["4111 1111 1111 1111", "PaymentProcessed", "1.0.0", "USD"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["eventId", "eventType", "version", "data", "payload", "amount", "value", "x"]) | st.text(
            max_size=8), children, max_size=5),
    max_leaves=60,
)


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _json_values.map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 3000).map(lambda n: b"[" * n), st.integers(1, 3000).map(lambda n: b'{"a":' * n)))
def test_the_codec_raises_nothing_but_validation_errors(raw: bytes) -> None:
    try:
        decode_event(raw)
    except EventValidationError as exc:
        assert "4111 1111" not in str(exc)
