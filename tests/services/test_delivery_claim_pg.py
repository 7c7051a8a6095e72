"""The delivery's claim on PostgreSQL locks a pass's intents once, whatever the planner thinks of the table.

The claim was one UPDATE whose rows came from ``event_id IN (SELECT ... ORDER BY ... LIMIT n FOR UPDATE SKIP
LOCKED)``. On a table the planner had no statistics for yet (every new notifications database, and any that grew
since autovacuum last analyzed it) it ran as a nested-loop semi join that re-ran the locking subquery once for
every due row: O(backlog × pass) work, 3.8 s of the backend's CPU for one pass of 1,000 over a backlog of 5,000
(auto_explain, 2026-12-03; `tools/mailbench.py --delivery 5000 --postgresql`). Here a backlog is claimed and each
claiming statement the pass ran is run again under EXPLAIN ANALYZE (rolled back): its row lock runs once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from conftest_an import driver_statements, feed, processed

from payevents.services import notifications
from payevents.services.notifications.service import SERVICE
from payevents.services.notifications.store import engine
from payevents.settings import Settings


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_pass_locks_its_intents_once_over_a_backlog(pg_settings: Settings) -> None:
    notifications.add_customer(pg_settings, "cus_a", "Ann", "ann@example.com", "en_US")
    feed(pg_settings, SERVICE, [processed(f"pay_{i}", "10.00", "EUR", customer_id="cus_a") for i in range(3000)],
         batch=500)
    with driver_statements() as statements:
        report = notifications.deliver_pending(pg_settings, 500)
    claims = [(sql, parameters) for sql, parameters, _many in statements if "SKIP LOCKED" in sql]
    assert (report.claimed, report.sent) == (500, 500)
    assert claims
    with engine(pg_settings).connect() as conn:
        for statement, parameters in claims:
            with conn.begin() as tx:
                (plan,) = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).one()
                tx.rollback()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            locks = [n for n in _nodes(plan[0]["Plan"]) if n["Node Type"] == "LockRows"]
            assert locks and all(n["Actual Loops"] == 1 for n in locks), json.dumps(plan, indent=1)[:3000]
            assert all(n["Actual Rows"] <= 500 for n in locks)
