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

from card_leak import shows_test_card
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
    assert "Traceback" not in result.output and not shows_test_card(result.output)
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


# -- numbers no Decimal can hold (exponents beyond ±999,999,999,999,999,999), integers no int is read from ------

#: the last: more digits than Python converts to an int (4,300): the precise reader said "not valid JSON (not UTF-8)"
#: of the whole document, and the card guard could not read a document holding one to mask what its escapes spell
_HUGE = ["1e999999999999999999999", "-1E-999999999999999999999", "0.5e+9999999999999999999999", "9" * 5000]


def _event_with_amount(token: str, *, pretty: bool) -> bytes:
    doc = json.loads(SEED_EXAMPLE_TEXT)
    doc["data"]["amount"]["value"] = "@@"
    text = json.dumps(doc, indent=2 if pretty else None)
    return text.replace('"@@"', token).encode()


@pytest.mark.parametrize("token", _HUGE)
@pytest.mark.parametrize("pretty", [False, True])
def test_an_amount_no_decimal_can_hold_is_an_error_naming_the_field(token: str, pretty: bool) -> None:
    with pytest.raises(EventValidationError) as info:
        decode_event(_event_with_amount(token, pretty=pretty))
    errors = {e.path: e for e in info.value.errors}
    assert "data.amount.value" in errors, info.value.errors
    assert "out of range" in errors["data.amount.value"].message
    assert codec.validate_document(_event_with_amount(token, pretty=pretty))  # an answer, not an exception


@pytest.mark.parametrize("token", _HUGE)
def test_an_unknown_field_no_decimal_can_hold_is_ignored_like_any_unknown_field(token: str) -> None:
    doc = json.loads(SEED_EXAMPLE_TEXT)
    doc["data"]["extra"] = "@@"
    for text in (json.dumps(doc), json.dumps(doc, indent=2)):  # the fast path and the precise one agree
        decoded = decode_event(text.replace('"@@"', token).encode())
        assert str(decoded.payment_id) == doc["data"]["paymentId"]


@pytest.mark.parametrize("token", _HUGE)
def test_the_card_guard_reads_documents_with_numbers_no_decimal_can_hold(token: str) -> None:
    from payevents.contracts.cardguard import holds_card_number, mask_card_numbers

    raw = b'{"n":' + token.encode() + b',"a":"4111\\n1111\\n1111\\n1111"}'  # escapes hide the card number
    assert holds_card_number(raw)
    masked = mask_card_numbers(raw)
    assert not holds_card_number(masked)
    assert token.encode() in masked  # the number is kept as written


_number_tokens = st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,25})?", fullmatch=True)


@hsettings(max_examples=200, deadline=None)
@given(_number_tokens, st.sampled_from(["amount", "extra", "top"]), st.booleans())
def test_any_json_number_anywhere_gives_an_event_or_a_validation_error(token: str, where: str, pretty: bool) -> None:
    doc = json.loads(SEED_EXAMPLE_TEXT)
    if where == "amount":
        doc["data"]["amount"]["value"] = "@@"
    elif where == "extra":
        doc["data"]["metadata"] = {"n": "@@"}
    else:
        doc["n"] = "@@"
    raw = json.dumps(doc, indent=2 if pretty else None).replace('"@@"', token).encode()
    try:
        decode_event(raw)
    except EventValidationError:
        pass
