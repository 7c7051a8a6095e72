"""Safe by default outside dev: the API token check at start, idempotent creates (issue #11)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payevents.errors import ConfigError
from payevents.faces.web import create_app
from payevents.settings import Settings

STRONG = "k" * 20 + "-Z9q" * 4  # 36 characters


@pytest.mark.parametrize("env", ["sit", "prod"])
@pytest.mark.parametrize("token", ["dev-token", "short-but-set", " " * 3 + "x" * 10])
def test_outside_dev_the_api_refuses_to_start_with_a_default_or_short_token(settings: Settings, env: str,
                                                                            token: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_app(settings.replace(env=env, api_token=token))
    message = str(err.value)
    assert "\n" not in message and "PAYEVENTS_API_TOKEN" in message and env in message
    assert token.strip() not in message  # the token itself is never echoed


@pytest.mark.parametrize("env", ["sit", "prod"])
def test_outside_dev_a_token_left_unset_is_refused(tmp_path: Any, env: str) -> None:
    settings = Settings.from_env({"PAYEVENTS_ENV": env, "PAYEVENTS_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="PAYEVENTS_API_TOKEN"):
        create_app(settings)


def test_outside_dev_a_long_explicit_token_starts_and_guards_writes(settings: Settings) -> None:
    app = create_app(settings.replace(env="prod", api_token=STRONG))
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        r = client.post("/api/customers", json={"customer_id": "c1", "name": "C"},
                        headers={"Authorization": "Bearer dev-token", "Idempotency-Key": "k"})
        assert r.status_code == 401


def test_dev_keeps_the_dev_default(settings: Settings) -> None:
    create_app(settings)  # no exception: dev is for laptops


def test_serve_outside_dev_exits_with_one_line(tmp_path: Any) -> None:
    env = {**os.environ, "PAYEVENTS_ENV": "prod", "PAYEVENTS_DATA_DIR": str(tmp_path)}
    env.pop("PAYEVENTS_API_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", "from payevents.faces.cli import main; main()", "serve",
                           "--port", "1"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PAYEVENTS_API_TOKEN" in lines[0], proc.stderr
