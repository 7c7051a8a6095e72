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
