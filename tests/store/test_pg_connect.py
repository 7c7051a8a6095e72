"""A PostgreSQL server that never answers: the connect fails (libpq's connect_timeout) instead of waiting for ever.

A listening socket nobody accepts from is such a server: the kernel completes the TCP handshake, and the
startup message gets no reply. No PostgreSQL is needed."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from payevents.store import db


def test_a_connect_to_a_server_that_never_answers_fails_instead_of_waiting_for_ever() -> None:
    silent = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = silent.getsockname()[1]
    engine = db.make_engine(f"postgresql+psycopg://payevents@127.0.0.1:{port}/payevents")
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            with engine.connect():
                pass
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(120)  # the default connect_timeout is 10 s; without one, libpq waits for ever
    silent.close()
    engine.dispose()
    assert not thread.is_alive(), "the connect to a silent server never ended"
    assert len(outcome) == 1 and isinstance(outcome[0], sa.exc.OperationalError)
    assert "timeout" in str(outcome[0]).lower()


@pytest.mark.parametrize(("query", "expected"), [
    ("", db.PG_CONNECT_DEFAULTS),
    ("?connect_timeout=3&keepalives_idle=120", {**db.PG_CONNECT_DEFAULTS, "connect_timeout": "3",
                                                "keepalives_idle": "120"}),
])
def test_connections_get_the_timeouts_and_keepalives_the_url_does_not_set(query: str, expected: dict[str, Any]) -> None:
    engine = db.make_engine(f"postgresql+psycopg://payevents@127.0.0.1:1/payevents{query}")
    params: dict[str, Any] = {}

    @sa.event.listens_for(engine, "do_connect")
    def _seen(dialect: Any, rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        params.update(cparams)

    with pytest.raises(sa.exc.OperationalError):  # nothing listens on port 1
        engine.connect()
    engine.dispose()
    assert {k: params.get(k) for k in expected} == expected


_FROZEN_HOLDER = """
import os, signal, sys
from payevents.store import db
engine = db.make_engine(sys.argv[1], sys.argv[2])
conn = engine.connect()
conn.exec_driver_sql("SELECT n FROM held WHERE id = 1 FOR UPDATE").all()
print("locked", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # frozen in its transaction: a paused VM, a host cut off, a debugger
"""


def test_a_client_frozen_in_its_transaction_does_not_hold_its_locks_for_ever(pg_available: str, unique: str) -> None:
    # A process that stops mid-transaction keeps its row and advisory locks while its connection stays up (a
    # frozen process's kernel still answers; a host cut off without a reset is noticed by the server after
    # hours): every other worker that needs those rows waits behind it. The server ends such a session
    # (idle_in_transaction_session_timeout): by default after db.PG_IDLE_IN_TRANSACTION_MS (next test), here
    # after 1.5 s, as the URL says
    import subprocess
    import sys

    schema = f"t_{unique}"
    url = (pg_available + ("&" if "?" in pg_available else "?")
           + "options=-c%20idle_in_transaction_session_timeout%3D1500")
    mine = db.make_engine(pg_available, schema)
    with mine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE held (id INT PRIMARY KEY, n INT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO held VALUES (1, 0)")
    holder = subprocess.Popen([sys.executable, "-c", _FROZEN_HOLDER, url, schema], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with mine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
            conn.exec_driver_sql("UPDATE held SET n = n + 1 WHERE id = 1")  # waits for the frozen one's lock
        with mine.connect() as conn:
            assert conn.exec_driver_sql("SELECT n FROM held").scalar() == 1
    finally:
        holder.kill()
        holder.wait()
        with mine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        mine.dispose()


def test_every_session_gets_the_server_side_limits_the_url_does_not_set(pg_available: str, unique: str) -> None:
    def shown(url: str, schema: str | None) -> dict[str, str]:
        engine = db.make_engine(url, schema)
        try:
            with engine.connect() as conn:
                return {k: str(conn.exec_driver_sql("SELECT setting FROM pg_settings WHERE name = %s", (k,)).scalar())
                        for k in (*db.PG_SESSION_DEFAULTS, "search_path")}
        finally:
            engine.dispose()

    ours = shown(pg_available, f"s_{unique}")
    assert ours["idle_in_transaction_session_timeout"] == str(db.PG_IDLE_IN_TRANSACTION_MS)  # in ms
    assert (ours["tcp_keepalives_idle"], ours["tcp_keepalives_interval"], ours["tcp_keepalives_count"]) == (
        "30", "10", "3")
    assert ours["search_path"] == f"s_{unique}"
    theirs = shown(pg_available + ("&" if "?" in pg_available else "?")
                   + "options=-c%20idle_in_transaction_session_timeout%3D5min", f"s_{unique}")
    assert theirs["idle_in_transaction_session_timeout"] == "300000" and theirs["search_path"] == f"s_{unique}"
    engine = db.make_engine(pg_available)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "s_{unique}" CASCADE')
    engine.dispose()
