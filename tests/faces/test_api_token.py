"""An empty API token never opens the write endpoints."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from payevents.errors import ConfigError
from payevents.faces.web import create_app
from payevents.settings import Settings


def test_an_empty_token_is_refused_by_the_settings() -> None:
    with pytest.raises(ConfigError, match="PAYEVENTS_API_TOKEN"):
        Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_API_TOKEN": "  "})


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "bearer  "])
def test_an_empty_token_in_settings_built_directly_still_refuses_writes(settings: Settings, header: str) -> None:
    app = create_app(settings.replace(api_token=" "))
    with TestClient(app) as client:
        r = client.post("/api/payments", headers={"Authorization": header},
                        json={"customer_id": "cus_1", "amount": "1.00", "currency": "USD", "description": "x"})
    assert r.status_code == 401
