"""SQL helpers, one home: statements written with ``?`` placeholders, run on either driver.

sqlite3 takes ``qmark`` (``?``), psycopg ``format`` (``%s``). Statements here are written once with ``?``
and turned into the connection's style by :func:`driver_sql`; ``exec_driver_sql`` then skips SQLAlchemy's
compilation on the hot paths (executemany of thousands of rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def pg_array(values: Iterable[str | int | None]) -> str:
    """``values`` as a PostgreSQL array literal, for an array parameter (``unnest(%s::text[])``, ``%s::bigint[]``).

    psycopg dumps a Python list element by element in Python: ~1.9 µs a key, about 1 ms of client CPU for each
    500-id lookup of a consumer batch (issue #14). The literal is one string join, read by the server's
    ``array_in``: elements are double-quoted with ``"`` and ``\\`` escaped (so commas, braces, spaces and the
    word NULL inside a string stay that string; escaping is one pass over the joined text too), None is ``NULL``,
    an int is its digits. Other types raise TypeError (a bool too: it is not a number here)."""
    items = values if isinstance(values, list | tuple) else list(values)
    if not items:
        return "{}"
    try:
        joined = '","'.join(items)  # type: ignore[arg-type]  # every element a str: the common case
    except TypeError:
        return _pg_elements(items)
    # nothing to escape: the only quotes are the separators' (two each) and there is no backslash
    if joined.count('"') == 2 * (len(items) - 1) and "\\" not in joined:
        return '{"' + joined + '"}'
    # quotes or backslashes inside (JSON texts): escaped in the whole text at once, with the elements joined by a
    # NUL (never in a PostgreSQL text) that becomes the separator after
    raw = "\x00".join(items)  # type: ignore[arg-type]
    if raw.count("\x00") == len(items) - 1:
        return '{"' + raw.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", '","') + '"}'
    return _pg_elements(items)


def _pg_elements(items: Sequence[str | int | None]) -> str:
    """:func:`pg_array` element by element: quotes and backslashes escaped, None as NULL, ints as digits."""
    out: list[str] = []
    for v in items:
        if v is None:
            out.append("NULL")
        elif isinstance(v, str):
            out.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise TypeError(f"pg_array: {type(v).__name__} is not a str, int or None")
    return "{" + ",".join(out) + "}"
