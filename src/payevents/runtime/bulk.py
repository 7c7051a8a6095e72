"""Batch reads and writes for the consumer runtime and the batch handlers, cheap on both dialects.

PostgreSQL (issue #14, from the profile of ``payevents bench consume --database postgresql``):

* ``WHERE key IN (500 parameters)`` on a table that was never analyzed (every new service database, and
  any that grew since autovacuum last ran) is planned as an index scan on the leading ``service`` column
  with the list as a filter: every batch compares its ids with *every* row of the service, so a batch
  costs more the more was consumed (O(N) per batch, O(N²) in all). :func:`lookup` instead joins the ids
  as an array with a ``LATERAL ... LIMIT`` subquery (an optimisation fence): one primary-key probe per id,
  whatever the statistics say.
* a driver ``executemany`` of an INSERT runs one statement per row on the server (psycopg pipelines the
  round trips, the server still parses, binds and executes each); :func:`copy_rows` sends the rows with
  ``COPY ... FROM STDIN``: one statement per batch, about 4× less time per row here. COPY has no
  ``ON CONFLICT``: with ``or_ignore`` the copy runs under a savepoint and, should a row already exist (a
  replay against a database older than the seen marks, a second member racing in a rebalance), falls back
  to the ``INSERT ... ON CONFLICT DO NOTHING`` executemany, so the outcome is exactly the INSERT's.

* an ``executemany`` of an UPDATE is the same: a statement per row. Measured on these machines (2026-12-03, 1,000
  notifications marked sent per transaction): 140–240 µs of the PostgreSQL backend's CPU a row, against 20–24 µs
  for one ``UPDATE ... FROM unnest(arrays)`` over the same rows (:func:`update_rows`).

SQLite keeps the driver-level ``executemany`` (sqlite3 runs it in C, in-process) and ``IN`` lists (its
planner uses the primary key for them).

psycopg errors from a COPY are raised as the matching SQLAlchemy exceptions (OperationalError,
IntegrityError, ...), so the runtime's transient/permanent classification is the same as for any statement.

Deferred rows (PostgreSQL, :mod:`payevents.runtime.writebehind`): on a connection whose ``info[DEFERRED]`` is a
list, :func:`copy_rows` only records its rows there; the write-behind batch sends them at its end as one
``INSERT ... SELECT FROM unnest(arrays)`` each (:func:`unnest_insert`), with the COMMIT, without waiting — or
before the next statement of the batch that could see or depend on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.store.db import dialect
from payevents.store.sql import mark, pg_array


def is_postgresql(conn: Connection) -> bool:
    return dialect(conn).arrays_and_copy


@contextmanager
def _sa_errors(statement: str) -> Iterator[None]:
    """Raise psycopg errors of a raw-cursor operation as SQLAlchemy's DBAPIError subclasses."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


#: ``Connection.info`` key of a write-behind batch's deferred rows (:class:`Deferred`, in the order written)
DEFERRED: Final = "payevents.bulk.deferred"


@dataclasses.dataclass(frozen=True)
class Deferred:
    """Rows :func:`copy_rows` was given inside a write-behind batch, not sent yet."""

    table: str
    columns: tuple[str, ...]
    rows: list[Sequence[Any]]
    or_ignore: str | None


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              or_ignore: str | None = None, usually_there: bool = False) -> None:
    """Insert ``rows`` into ``table``: COPY on PostgreSQL, executemany elsewhere; inside a write-behind batch
    (``conn.info[DEFERRED]``), recorded and sent later (see the module's note).

    ``or_ignore``: the conflict target (e.g. ``"event_id"``) of an ``INSERT ... ON CONFLICT (...) DO
    NOTHING`` whose semantics must hold: the COPY runs under a savepoint and a unique violation re-runs the
    rows as that INSERT — at once, with no COPY tried first, for rows ``usually_there`` (a few reference rows
    ensured by every batch)."""
    if not rows:
        return
    deferred = conn.info.get(DEFERRED)
    if deferred is not None:
        deferred.append(Deferred(table, tuple(columns), list(rows), or_ignore))
        return
    cols = ", ".join(columns)
    insert = f"INSERT INTO {table} ({cols}) VALUES ({', '.join([mark(conn)] * len(columns))})"
    if or_ignore is not None:
        insert += f" ON CONFLICT ({or_ignore}) DO NOTHING"
    if not is_postgresql(conn) or (usually_there and or_ignore is not None):
        conn.exec_driver_sql(insert, list(rows))
        return
    sql = f"COPY {table} ({cols}) FROM STDIN"
    if or_ignore is None:
        _copy(conn, sql, rows)
        return
    import psycopg

    savepoint = conn.begin_nested()
    try:
        _copy(conn, sql, rows)
    except sa.exc.IntegrityError as exc:
        if not isinstance(exc.orig, psycopg.errors.UniqueViolation):
            savepoint.rollback()
            raise
        savepoint.rollback()
        conn.exec_driver_sql(insert, list(rows))
    except BaseException:
        savepoint.rollback()
        raise
    else:
        savepoint.commit()


def update_rows(conn: Connection, table: str, key: str, rows: Sequence[Mapping[str, Any]], *, assign: str,
                where: str = "", types: Mapping[str, str] | None = None) -> None:
    """``UPDATE {table} SET {assign} WHERE {key} = <the row's key> [AND {where}]`` for each of ``rows``: one
    statement over arrays on PostgreSQL, a driver-level executemany elsewhere.

    Every row is a mapping with the same names, ``key`` among them, and no two rows have the same key (one
    statement updates a row once: a second value for it would be lost, so it is refused). ``assign`` and
    ``where`` name a row's values as ``{name}`` and the table's columns as themselves, e.g. ``assign="status =
    'sent', sent_at = {at}"``. ``types``: the PostgreSQL type of a value that is not text (``{"next": "bigint"}``);
    values are str, int or None (:func:`payevents.store.sql.pg_array`)."""
    if not rows:
        return
    names = list(rows[0])
    if key not in names:
        raise ValueError(f"update_rows: the rows have no {key!r}")
    if len({r[key] for r in rows}) != len(rows):
        raise ValueError(f"update_rows: a {key!r} repeats in the rows (one statement updates a row once)")
    if not is_postgresql(conn):
        named = {n: f":{n}" for n in names}
        sql = f"UPDATE {table} SET {assign.format(**named)} WHERE {key} = :{key}"
        conn.exec_driver_sql(sql + (f" AND {where.format(**named)}" if where else ""), [dict(r) for r in rows])
        return
    types = types or {}
    arrays = ", ".join(f"%s::{types.get(n, 'text')}[]" for n in names)
    # the values' columns get names no table has, so the table's own columns need no qualifier in assign/where
    of_v = {n: f"bulk_rows.bulk_v{i}" for i, n in enumerate(names)}
    sql = (f"UPDATE {table} SET {assign.format(**of_v)} FROM unnest({arrays})"
           f" AS bulk_rows({', '.join(f'bulk_v{i}' for i in range(len(names)))}) WHERE {table}.{key} = {of_v[key]}")
    conn.exec_driver_sql(sql + (f" AND {where.format(**of_v)}" if where else ""),
                         tuple(pg_array([r[n] for r in rows]) for n in names))


def unnest_insert(d: Deferred, types: Mapping[str, str]) -> tuple[str, list[str]]:
    """``d`` as one ``INSERT ... SELECT * FROM unnest($1::type[], ...)`` (``ON CONFLICT (...) DO NOTHING`` with
    ``or_ignore``) and its parameters: one array literal per column (:func:`payevents.store.sql.pg_array`).
    ``types``: the table's column types without modifiers (the column's own length limit then holds on
    assignment, as in COPY). Placeholders are libpq's ``$n`` (the statement is sent as it is)."""
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(d.columns, start=1))
    sql = f"INSERT INTO {d.table} ({', '.join(d.columns)}) SELECT * FROM unnest({arrays})"
    if d.or_ignore is not None:
        sql += f" ON CONFLICT ({d.or_ignore}) DO NOTHING"
    return sql, [_array([row[j] for row in d.rows]) for j in range(len(d.columns))]


def _array(values: list[Any]) -> str:
    """One column's values as an array literal; values other than str, int and None as COPY writes them."""
    try:
        return pg_array(values)
    except TypeError:
        return pg_array([v if v is None or (isinstance(v, str | int) and not isinstance(v, bool))
                         else _text(v) for v in values])


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal | float):
        return str(v)
    raise TypeError(f"a deferred row holds a {type(v).__name__}, which has no text form here")


def _copy(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    raw: Any = conn.connection.driver_connection
    with _sa_errors(sql), raw.cursor() as cur, cur.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def lookup(conn: Connection, select: str, table: str, where: str, column: str, keys: Sequence[str],
           params: Sequence[Any] = (), *, unique: bool = True, chunk: int = 500,
           lock: bool = False) -> Iterator[Sequence[Any]]:
    """The rows of ``SELECT {select} FROM {table} WHERE {where} AND {column} = key`` for each of ``keys``.

    ``where`` uses the driver's marks for ``params``; ``unique``: at most one row per key (a primary key);
    ``lock``: the rows are locked for the rest of the transaction (``FOR UPDATE`` on PostgreSQL, in the order of
    ``keys``; SQLite's writer holds the database already). PostgreSQL: one index probe per key (see the module's
    note), one statement text whatever the keys (prepared once); SQLite: an ``IN`` list per ``chunk``."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return
    if is_postgresql(conn):
        limit = "LIMIT 1" if unique else "OFFSET 0"  # the fence: never flattened into a hash or merge join
        inner = f"SELECT {select} FROM {table} WHERE {where} AND {column} = k.key {limit}"
        if lock:
            inner = dialect(conn).for_update(inner)
        sql = f"SELECT {select} FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL ({inner}) AS t"
        yield from conn.exec_driver_sql(sql, (pg_array(keys), *params))  # a literal: see store.sql.pg_array
        return
    m = mark(conn)
    for i in range(0, len(keys), chunk):
        part = keys[i : i + chunk]
        sql = f"SELECT {select} FROM {table} WHERE {where} AND {column} IN ({','.join([m] * len(part))})"
        yield from conn.exec_driver_sql(sql, (*params, *part))
