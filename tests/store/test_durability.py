"""On the embedded default a commit is on disk before it returns, in every SQLite file: the payments store
(an API's 201), the channel (the relay's acknowledgement, then its mark), each service's store (its effects,
then its offsets in the channel). With ``synchronous=NORMAL`` in WAL mode a power cut could keep a later commit
in one file and lose an earlier one in another — a mark without its record, offsets without their effects."""

from __future__ import annotations

import pytest

from payevents.services import load_service
from payevents.settings import Settings
from payevents.store.db import engine_for
from payevents.transport import open_transport

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


@pytest.mark.parametrize("store", ["payments", "ledger", "invoices", "analytics", "notifications"])
def test_every_store_commits_to_disk_before_it_returns(settings: Settings, store: str) -> None:
    if store != "payments":
        load_service(store)  # a service's store, as its runtime opens it
    with engine_for(settings, store).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"


def test_the_embedded_channel_commits_to_disk_before_it_returns(settings: Settings) -> None:
    transport = open_transport(settings)
    try:
        conn = transport._db.conn  # type: ignore[attr-defined]  # the log's one connection
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        transport.close()
