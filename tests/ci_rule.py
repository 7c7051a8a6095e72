"""The CI rule for the test suite: in CI (CI=true) a missing broker, database or browser is a failure.

Test-only (it imports pytest), so it lives with the tests, not in the installed package."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip on a developer machine without ``what``; fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI and is not available")
    pytest.skip(f"{what} not available")
