"""A cluster id is URL-safe base64 and starts with '-' for one UUID in 64: the storage format must still take it
(it was read as an option: "argument --cluster-id/-t: expected one argument", an intermittent CI failure)."""

from __future__ import annotations

import pytest

import payevents.localkafka as lk


def test_a_cluster_id_starting_with_a_dash_formats_and_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lk, "new_cluster_id", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    broker = lk.LocalKafka().start()
    try:
        assert broker.bootstrap
    finally:
        broker.stop()
