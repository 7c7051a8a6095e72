"""SQL helpers, one home: statements written with ``?`` placeholders, run on either driver.

sqlite3 takes ``qmark`` (``?``), psycopg ``format`` (``%s``). Statements here are written once with ``?``
and turned into the connection's style by :func:`driver_sql`; ``exec_driver_sql`` then skips SQLAlchemy's
compilation on the hot paths (executemany of thousands of rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

#: values per ``IN (...)`` list: below SQLite's 999-variable limit with room for other parameters
CHUNK = 400


def mark(conn: Connection) -> str:
    """The connection's driver placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def driver_sql(conn: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, for the connection's driver."""
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


def rows_in_chunks(conn: Connection, sql: str, values: Sequence[Any], repeat: int = 1) -> list[Any]:
    """Rows of ``sql`` — which holds ``repeat`` ``IN ({})`` lists, each given all of a chunk — over ``values``
    in chunks of :data:`CHUNK`."""
    rows: list[Any] = []
    for i in range(0, len(values), CHUNK):
        chunk = tuple(values[i : i + CHUNK])
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.exec_driver_sql(driver_sql(conn, sql.format(*[marks] * repeat)), chunk * repeat).all())
    return rows
