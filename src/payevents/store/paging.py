"""Keyset ("cursor") paging for the list queries: the rows after a given row in the list's order."""

from __future__ import annotations

from typing import Any

from payevents.errors import ContractError


def after_clause(conn: Any, table: str, key: str, id_column: str, *, descending: bool, starting_after: str,
                 alias: str = "") -> tuple[str, dict[str, Any]]:
    """SQL (and its parameters) selecting the rows of ``table`` ordered by ``key`` (descending or not), ties
    by ``id_column`` ascending, that come after the row whose id is ``starting_after``. An id that names no
    row is a ContractError naming ``starting_after``."""
    import sqlalchemy as sa

    row = conn.execute(sa.text(f"SELECT {key} FROM {table} WHERE {id_column} = :after_id"),
                       {"after_id": starting_after}).first()
    if row is None:
        raise ContractError("starting_after: no such item in this list (use the next_cursor of a page)")
    p = f"{alias}." if alias else ""
    op = "<" if descending else ">"
    sql = f"({p}{key} {op} :after_key OR ({p}{key} = :after_key AND {p}{id_column} > :after_id))"
    return sql, {"after_key": row[0], "after_id": starting_after}
