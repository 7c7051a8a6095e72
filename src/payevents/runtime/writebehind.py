"""Write-behind batches on PostgreSQL: a batch's rows and its COMMIT sent without waiting for the server.

A consumer on PostgreSQL waits for the server at every statement of a batch, so its wall time is its own CPU plus
the server's (issue #14, ``tools/consume_pg.py``). libpq's pipeline mode lets one thread overlap them: a batch's
deferred rows (every :func:`payevents.runtime.bulk.copy_rows` of the runtime and of the service's handlers — seen
marks, business facts, journal lines, …) go to the server as one ``INSERT ... SELECT FROM unnest(arrays)`` each,
followed by COMMIT, and the runtime goes on — polls and decodes the next batch — while the server writes them.
The outcome is read by :meth:`WriteBehind.settle` before the next batch touches the store (its lookups must see
this batch's rows): only then are the batch's offsets committed and its counts recorded. A batch that did not
commit (a constraint the server checks, a lost connection: :class:`LateFailure`) is rolled back by the server and
applied again by the runtime through an ordinary transaction, which isolates and dead-letters a culprit as usual.

What the handlers see does not change: the batch is one transaction on one connection (BEGIN is sent, and waited
for, at its start), reads run at once, and a deferred row is sent before any statement that could see or depend
on it — any statement other than a SELECT, and a SELECT naming a table with rows deferred (:meth:`_before`).
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.runtime import bulk
from payevents.runtime.deadletter import describe

#: a table's columns and their types by name, without modifiers (``pg_catalog.bpchar``, not ``character`` — which
#: is ``character(1)``): a value too long for its column fails on assignment, as it does in COPY
_TYPES_SQL = ("SELECT a.attname, format('%%I.%%I', n.nspname, t.typname) FROM pg_attribute a"
              " JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace"
              " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped")


class LateFailure(Exception):
    """The batch sent last did not commit, or its outcome is unknown (the connection failed): apply it again."""


class NotAhead(Exception):
    """A batch read ahead (:meth:`WriteBehind.batch` with ``ahead``) ran a statement that needs its transaction: a
    write that is not deferred, or a read of rows it deferred. Nothing was written: apply it in its transaction."""


class WriteBehind:
    """One PostgreSQL connection whose batches commit without the client waiting (see the module's note)."""

    #: how long :meth:`settle` waits for the server's answer before it gives the batch up as failed (s)
    settle_timeout = 60.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        #: a batch was sent and its outcome not read yet
        self.in_flight = False
        #: why sending the batch in flight failed (it is then given up at :meth:`settle`)
        self._send_failed: str | None = None
        self._types: dict[str, dict[str, str]] = {}
        #: the connection a batch read ahead reads on (autocommit), and that batch's rows, not sent yet
        self._reader: Connection | None = None
        self.prepared: list[bulk.Deferred] | None = None

    # -- the batch ----------------------------------------------------------------------------------------

    @contextmanager
    def batch(self, *, ahead: bool = False) -> Iterator[Connection]:
        """One transaction: its reads and writes as usual, its deferred rows and COMMIT sent at the end, not
        waited for. Raising inside rolls it back (waited for). The batch before must be settled.

        ``ahead``: the batch reads while the batch before may still be in flight — on a connection of its own,
        outside any transaction, so it may miss that batch's rows — and only defers rows; a statement that needs
        the transaction raises :class:`NotAhead`. Its rows are kept (:attr:`prepared`) until the caller has
        settled the batch before and sends them, BEGIN to COMMIT in one pipeline (:meth:`commit_prepared`), or
        drops them (:meth:`drop_prepared`: that batch was applied again, and this one's reads may miss it). Only
        for a service whose every effect is a row a unique key guards (``ServiceDef.insert_only``): a decision
        made on a read that missed the batch before is refused there, at its commit, and applied again."""
        if ahead:
            yield from self._ahead()
            return
        if self.in_flight:
            raise RuntimeError("write-behind: the batch in flight is not settled")
        conn = self._connection()
        deferred: list[bulk.Deferred] = []
        try:
            conn.commit()  # ends SQLAlchemy's own record of the previous batch (the driver is idle: nothing is sent)
            conn.exec_driver_sql("BEGIN")
            conn.info[bulk.DEFERRED] = deferred
            yield conn
        except BaseException:
            self._roll_back(conn)
            raise
        conn.info[bulk.DEFERRED] = None
        self._send_batch(deferred, begin=False)

    def _ahead(self) -> Iterator[Connection]:
        if self.prepared is not None:
            raise RuntimeError("write-behind: a batch read ahead is neither sent nor dropped")
        conn = self._reader
        if conn is None or _broken(conn):
            conn = self._reader = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            sa.event.listen(conn, "before_cursor_execute", _only_reads)
        deferred: list[bulk.Deferred] = []
        try:
            conn.commit()  # SQLAlchemy's record of a transaction; the driver sends nothing in autocommit
            conn.info[bulk.DEFERRED] = deferred
            yield conn
        except BaseException as exc:
            if isinstance(exc, sa.exc.SQLAlchemyError) or _broken(conn):
                self._reader = None  # a new one next time (this one may have lost its server)
                _drop(conn)
            else:
                conn.info[bulk.DEFERRED] = None
            raise
        conn.info[bulk.DEFERRED] = None
        self.prepared = deferred

    def commit_prepared(self) -> None:
        """Send the rows of the batch read ahead as one transaction, not waited for (the batch before is settled)."""
        deferred, self.prepared = self.prepared, None
        if deferred is None or self.in_flight:
            raise RuntimeError("write-behind: nothing read ahead, or the batch before is not settled")
        self._send_batch(deferred, begin=True)

    def _send_batch(self, deferred: Sequence[bulk.Deferred], *, begin: bool) -> None:
        """Send a batch's rows and COMMIT on the write-behind connection (with its BEGIN, if ``begin``: a batch read
        ahead); from now on the batch is in flight, and a failure to send is its outcome, given at :meth:`settle`."""
        self.in_flight = True
        try:
            conn = self._connection()
            if begin:
                conn.commit()  # SQLAlchemy's record of the batch before (settled: the driver is idle)
            self._send(conn, deferred, begin=begin, commit=True)
        except Exception as exc:  # given up at settle(): the batch is applied again
            self._send_failed = describe(exc)

    def drop_prepared(self) -> None:
        self.prepared = None

    def settle(self) -> None:
        """Wait for the outcome of the batch sent last; raises :class:`LateFailure` when it did not commit."""
        if not self.in_flight:
            return
        self.in_flight = False
        conn = self._conn
        failed, self._send_failed = self._send_failed, None
        if conn is None or failed is not None:
            self._discard()
            raise LateFailure(f"store: sending the batch failed: {failed}")
        try:
            error = self._results(conn)
        except Exception as exc:
            self._discard()
            raise LateFailure(f"store: no answer to the batch's commit: {describe(exc)}") from exc
        if error is not None:
            raise LateFailure(f"store: the batch did not commit: {error[0]}")

    def close(self) -> None:
        """Give the connections up (the caller settles first: a batch still in flight is left to the server)."""
        self.in_flight = False
        self.prepared = None
        self._discard()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # -- the connection -------------------------------------------------------------------------------------

    def _connection(self) -> Connection:
        """The write-behind connection; a new one when SQLAlchemy found the last one broken (the server ended it, the
        network failed): an invalidated connection keeps its transaction's record, and every use of it would raise
        ``PendingRollbackError`` from then on."""
        if self._conn is not None and _broken(self._conn):
            self._discard()
        if self._conn is None:
            # the driver in autocommit: BEGIN and COMMIT are this class's to send (COMMIT in the pipeline)
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            sa.event.listen(conn, "before_cursor_execute", self._before)
            conn.info[bulk.DEFERRED] = None
            self._conn = conn
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _drop(conn)

    def _roll_back(self, conn: Connection) -> None:
        """Roll the batch's transaction back; a connection whose state is not known is given up instead."""
        try:
            if _broken(conn) or self._pgconn(conn).pipeline_status:  # or a pipeline left half read
                raise RuntimeError("the connection's state is not known")
            conn.info[bulk.DEFERRED] = None
            conn.rollback()  # the driver sends ROLLBACK (its transaction is the BEGIN sent above)
        except Exception:
            self._discard()

    def _pgconn(self, conn: Connection) -> Any:
        return conn.connection.driver_connection.pgconn  # type: ignore[union-attr]

    # -- deferred rows ----------------------------------------------------------------------------------------

    def _before(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        """Before a statement of the batch: send the deferred rows it could see or depend on (waited for)."""
        deferred = conn.info.get(bulk.DEFERRED)
        if not deferred or _after_deferred(statement, deferred) is None:
            return
        rows = list(deferred)
        deferred.clear()
        self._send(conn, rows, commit=False)
        error = self._results(conn)
        if error is not None:  # raised as the statement's own error would be (DataError, IntegrityError, ...)
            import psycopg

            message, sqlstate = error
            raise sa.exc.DBAPIError.instance(f"deferred rows of {', '.join(d.table for d in rows)}", None,
                                             psycopg.errors.lookup(sqlstate)(message), psycopg.Error)

    def _statements(self, conn: Connection, deferred: Sequence[bulk.Deferred]) -> list[tuple[bytes, list[bytes]]]:
        out: list[tuple[bytes, list[bytes]]] = []
        for d in deferred:
            types = self._types.get(d.table)
            if types is None:
                raw: Any = conn.connection.driver_connection
                types = self._types[d.table] = dict(raw.execute(_TYPES_SQL, (d.table,)).fetchall())
            sql, params = bulk.unnest_insert(d, types)
            out.append((sql.encode(), [p.encode() for p in params]))
        return out

    def _send(self, conn: Connection, deferred: Sequence[bulk.Deferred], *, begin: bool = False,
              commit: bool) -> None:
        """Send the rows (after BEGIN, before COMMIT) in one pipeline, ending in a sync point; the results are read
        later."""
        statements = self._statements(conn, deferred)
        if begin:
            statements.insert(0, (b"BEGIN", []))
        if commit:
            statements.append((b"COMMIT", []))
        pg = self._pgconn(conn)
        pg.enter_pipeline_mode()
        for sql, params in statements:
            pg.send_query_params(sql, params or None)
        pg.pipeline_sync()
        deadline = time.monotonic() + self.settle_timeout
        while pg.flush() == 1:  # the rest waits for room in the socket (reading what the server sends meanwhile)
            readable, _w, _x = select.select([pg.socket], [pg.socket], [], _left(deadline))
            if readable:
                pg.consume_input()

    def _results(self, conn: Connection) -> tuple[str, str] | None:
        """Read the pipeline's results up to its sync point and leave pipeline mode; the first error (its message
        and SQLSTATE), if any: the rest of the pipeline was then skipped, and the failed transaction is rolled back
        here."""
        from psycopg import pq

        pg = self._pgconn(conn)
        deadline = time.monotonic() + self.settle_timeout
        error: tuple[str, str] | None = None
        while True:
            pg.consume_input()
            if pg.is_busy():
                select.select([pg.socket], [], [], _left(deadline))
                continue
            r = pg.get_result()
            if r is None:
                continue
            status = r.status
            if status == pq.ExecStatus.PIPELINE_SYNC:
                break
            if status == pq.ExecStatus.FATAL_ERROR and error is None:
                message = (r.error_message or b"").decode(errors="replace").strip() or "an error without a message"
                error = (message, (r.error_field(pq.DiagnosticField.SQLSTATE) or b"XX000").decode())
            elif status == pq.ExecStatus.COMMAND_OK and r.command_status == b"ROLLBACK" and error is None:
                error = ("the server rolled the transaction back", "40000")
        pg.exit_pipeline_mode()
        if error is not None:
            self._roll_back(conn)
        return error


def _broken(conn: Connection) -> bool:
    """SQLAlchemy found ``conn`` broken (the server ended it, the network failed), or it was closed: not to be used."""
    return conn.invalidated or conn.closed


def _drop(conn: Connection) -> None:
    """Give a connection up for good: never back into the pool (its state is not known), its record rolled back."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # already unusable: nothing of it is kept
        pass


def _only_reads(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
    """Before a statement of a batch read ahead: a SELECT of tables it has deferred no rows for, or NotAhead."""
    deferred = conn.info.get(bulk.DEFERRED)
    if deferred is not None and (why := _after_deferred(statement, deferred)) is not None:
        raise NotAhead(why)


def _after_deferred(statement: str, deferred: Sequence[bulk.Deferred]) -> str | None:
    """Why ``statement`` must run after the batch's ``deferred`` rows (it could see or depend on them), or None: any
    statement but a SELECT, and a SELECT naming a table with rows deferred."""
    if statement.lstrip()[:6].upper() != "SELECT":
        return f"a statement other than a SELECT: {statement[:60]!r}"
    if any(d.table in statement for d in deferred):
        return f"a read of rows it deferred ({', '.join(sorted({d.table for d in deferred}))})"
    return None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the PostgreSQL server did not answer in time")
    return left
