"""Database faults the tests put a client through (imported by tests anywhere under ``tests/``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def read_only_sessions(engines: Iterable[Any]) -> Iterator[None]:
    """Every new connection of these PostgreSQL engines is read-only meanwhile, as a standby's are (SQLSTATE 25006
    on a write): what a client meets while a failover points the database's address at a replica."""
    import sqlalchemy as sa

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_conn.commit()

    chosen = list(engines)
    for engine in chosen:
        engine.dispose()
        sa.event.listen(engine, "connect", read_only)
    try:
        yield
    finally:
        for engine in chosen:
            sa.event.remove(engine, "connect", read_only)
            engine.dispose()
