"""The audit headers and the env parameter: every field required, non-empty, a string; env exactly dev/sit/prod."""

from __future__ import annotations

from typing import Any

import pytest

from payevents.contracts.channel import Env, audit_headers, parse_env
from payevents.errors import ContractError

_GOOD: dict[str, Any] = dict(correlation_id="pay_1", causation_id="cmd-1", source="payments", producer="payevents/0.1",
                             environment="dev", idempotency_key="k-1")


def test_good_headers_are_returned_as_strings() -> None:
    assert audit_headers(**_GOOD) == {"correlationId": "pay_1", "causationId": "cmd-1", "source": "payments",
                                      "producer": "payevents/0.1", "environment": "dev", "idempotencyKey": "k-1"}
    assert audit_headers(**{**_GOOD, "environment": Env.prod})["environment"] == "prod"


@pytest.mark.parametrize("field,header", [("correlation_id", "correlationId"), ("causation_id", "causationId"),
                                          ("source", "source"), ("producer", "producer"),
                                          ("idempotency_key", "idempotencyKey")])
@pytest.mark.parametrize("bad", ["", None, 7, b"x"])
def test_each_header_must_be_a_non_empty_string(field: str, header: str, bad: object) -> None:
    with pytest.raises(ContractError, match=f"headers.{header}: required non-empty string"):
        audit_headers(**{**_GOOD, field: bad})


@pytest.mark.parametrize("bad", ["", "DEV", "prod ", "test", None, 1, b"dev"])
def test_env_is_exactly_one_of_the_options(bad: object) -> None:
    with pytest.raises(ContractError, match=r"env: .* is not one of dev, sit, prod \(it has no default\)"):
        parse_env(bad)
    with pytest.raises(ContractError, match="env: "):
        audit_headers(**{**_GOOD, "environment": bad})


def test_env_values_and_members_are_the_same_env() -> None:
    assert [parse_env(v) for v in ("dev", "sit", "prod", Env.sit)] == [Env.dev, Env.sit, Env.prod, Env.sit]
