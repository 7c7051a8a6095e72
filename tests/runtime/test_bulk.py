"""runtime.bulk: COPY / executemany writes and per-key lookups give the same rows on SQLite and PostgreSQL;
an ``or_ignore`` COPY that meets an existing row keeps the INSERT ... ON CONFLICT DO NOTHING outcome; a
conflicting plain COPY is an SQLAlchemy IntegrityError (the runtime retries the batch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from payevents.runtime import bulk
from payevents.settings import Settings
from payevents.store import db
from payevents.store.sql import pg_array

COLUMNS = ("service", "event_id", "note", "n")


@pytest.fixture(scope="module")
def pg_conn(pg_available: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(pg_available.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        yield conn


def _engine(settings: Settings) -> sa.Engine:
    engine = db.engine_for(settings, "bulktest")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (service VARCHAR(64) NOT NULL,"
                             " event_id VARCHAR(128) NOT NULL, note TEXT, n BIGINT, PRIMARY KEY (service, event_id))")
    return engine


def test_copy_rows_and_lookup(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    rows = [("s", f"e{i}", None if i % 3 else f"é\t\\n{i}", i) for i in range(1200)]
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, rows)
        bulk.copy_rows(conn, "t", COLUMNS, [])
    with engine.begin() as conn:
        m = bulk.mark(conn)
        keys = [f"e{i}" for i in range(0, 1300, 7)] + ["e7"]
        got = {r[0]: (r[1], r[2]) for r in bulk.lookup(conn, "event_id, note, n", "t", f"service = {m}", "event_id",
                                                         keys, ("s",))}
        assert got == {f"e{i}": (None if i % 3 else f"é\t\\n{i}", i) for i in range(0, 1200, 7)}
        assert list(bulk.lookup(conn, "event_id", "t", f"service = {m}", "event_id", [], ("s",))) == []
        several = list(bulk.lookup(conn, "event_id", "t", "n >= 0", "service", ["s"], (), unique=False))
        assert len(several) == 1200


def test_or_ignore_keeps_on_conflict_do_nothing(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", "first", 1)])
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "b", "new", 2), ("s", "a", "second", 3)],
                       or_ignore="service, event_id")
        conn.exec_driver_sql("INSERT INTO t (service, event_id, note, n) VALUES ('s', 'c', 'after', 4)")
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.exec_driver_sql("SELECT event_id, note, n FROM t"))
    assert rows == [("a", "first", 1), ("b", "new", 2), ("c", "after", 4)]


def test_a_conflicting_copy_is_an_integrity_error(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", None, 1)])
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", None, 1)])


def test_lookup_finds_keys_of_any_spelling(store_settings: Settings) -> None:
    """Keys with quotes, backslashes, commas, braces, spaces, the word NULL, the empty string and non-ASCII are
    found as themselves (on PostgreSQL the keys travel as one array literal: store.sql.pg_array)."""
    engine = _engine(store_settings)
    odd = ['a"b', "c\\d", 'e\\"f', "g,h", "{i}", " j ", "NULL", "null", "", "é🙂", "\\", '"', "k'l", "tab\there"]
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", k, None, i) for i, k in enumerate(odd)])
    with engine.connect() as conn:
        m = bulk.mark(conn)
        got = {r[0]: r[1] for r in bulk.lookup(conn, "event_id, n", "t", f"service = {m}", "event_id",
                                               [*odd, "absent", 'x"y'], ("s",))}
    assert got == {k: i for i, k in enumerate(odd)}


@given(st.lists(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                          st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))))
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pg_array_reads_back_as_the_values(pg_conn: Any, values: list[Any]) -> None:
    """store.sql.pg_array: the literal PostgreSQL reads is the list (text elements as text[], ints as bigint[])."""
    texts = [v if v is None or isinstance(v, str) else str(v) for v in values]
    assert pg_conn.execute("SELECT %s::text[]", (pg_array(texts),)).fetchone()[0] == texts
    ints = [v for v in values if v is None or isinstance(v, int)]
    assert pg_conn.execute("SELECT %s::bigint[]", (pg_array(ints),)).fetchone()[0] == ints


def test_pg_array_joins_plain_keys_without_escaping_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys with nothing to escape (eventIds, paymentIds: every consumer batch's lookups) are one join, and texts
    holding quotes or backslashes (a fact's JSON) are escaped in one pass over the join; only a list holding a None,
    an int or a NUL goes element by element (store.sql._pg_elements)."""
    from payevents.store import sql

    per_element: list[Sequence[Any]] = []
    slow = sql._pg_elements
    monkeypatch.setattr(sql, "_pg_elements", lambda items: per_element.append(items) or slow(items))
    assert pg_array(["019b0cf5-e440-82b2", "pay_1", "a,b {c} NULL"]) == '{"019b0cf5-e440-82b2","pay_1","a,b {c} NULL"}'
    assert pg_array(["x"]) == '{"x"}'
    assert pg_array([]) == "{}"
    assert per_element == []
    assert pg_array(['a"b', "c"]) == '{"a\\"b","c"}'
    assert pg_array(["a\\b", '{"k": "v\\\\"}']) == '{"a\\\\b","{\\"k\\": \\"v\\\\\\\\\\"}"}'
    assert per_element == []
    assert pg_array(["a", None]) == '{"a",NULL}'
    assert pg_array([1, 2]) == "{1,2}"
    assert pg_array(['a"\x00b']) == '{"a\\"\x00b"}'
    assert len(per_element) == 3


def test_pg_array_refuses_other_types() -> None:
    for bad in ([True], [1.5], [b"x"], ["a", 2.0]):
        with pytest.raises(TypeError):
            pg_array(bad)


def test_update_rows_updates_each_row_as_its_own_statement_would(store_settings: Settings) -> None:
    """update_rows: one statement over arrays on PostgreSQL, an executemany on SQLite — the same rows after: each
    listed row gets its own values (text of any spelling, NULL, a bigint), ``where`` is held per row, rows not
    listed and keys not in the table change nothing."""
    engine = _engine(store_settings)
    odd = ['a"b', "c\\d", "g,h", "{i}", "NULL", "", "é🙂", "tab\there"]
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", f"e{i}", "old", i) for i in range(6)])
    marks = [{"event_id": f"e{i}", "note": odd[i] if i % 2 else None, "n": 10**12 + i, "only": "s"} for i in range(4)]
    marks.append({"event_id": "absent", "note": "x", "n": 1, "only": "s"})
    marks.append({"event_id": "e4", "note": "not me", "n": 2, "only": "other service"})
    with engine.begin() as conn:
        bulk.update_rows(conn, "t", "event_id", marks, assign="note = {note}, n = {n}",
                         where="service = {only} AND n < 100", types={"n": "bigint"})
        bulk.update_rows(conn, "t", "event_id", [], assign="note = {note}")
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.exec_driver_sql("SELECT event_id, note, n FROM t"))
    assert rows == [*((f"e{i}", odd[i] if i % 2 else None, 10**12 + i) for i in range(4)), ("e4", "old", 4),
                    ("e5", "old", 5)]


def test_update_rows_refuses_a_repeated_key(store_settings: Settings) -> None:
    """One statement updates a row once: a second value for the same key would be lost without a word."""
    engine = _engine(store_settings)
    with pytest.raises(ValueError, match="'event_id' repeats"), engine.begin() as conn:
        bulk.update_rows(conn, "t", "event_id", [{"event_id": "a", "n": 1}, {"event_id": "a", "n": 2}],
                         assign="n = {n}", types={"n": "bigint"})
    with pytest.raises(ValueError, match="no 'event_id'"), engine.begin() as conn:
        bulk.update_rows(conn, "t", "event_id", [{"id": "a", "n": 1}], assign="n = {n}")
