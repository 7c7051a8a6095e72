"""Ledger: balanced entries per PaymentProcessed, replays post nothing, the journal is append-only in
the database, verify finds every violation. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from money_helpers import deliver, processed

from payevents.errors import ContractError, PoisonEvent
from payevents.services import ledger
from payevents.services.ledger import store
from payevents.settings import Settings


def test_payment_processed_posts_one_balanced_entry(store_settings: Settings) -> None:
    e = processed(amount="99.99", currency="USD", invoice_id="INV-1")
    deliver(store_settings, "ledger", [e])
    [entry] = ledger.journal(store_settings, payment_id=e.payment_id)
    assert entry.event_id == e.event_id and entry.kind == "payment" and not entry.legacy
    assert [(ln.account, ln.side, ln.currency, ln.amount_minor) for ln in entry.lines] == [
        ("cash", "D", "USD", 9999), ("accounts_receivable", "C", "USD", 9999)]
    assert entry.lines[0].amount == Decimal("99.99") and entry.lines[0].account_name == "Cash"
    tb = ledger.balances(store_settings)
    assert tb.balanced and tb.entries == 1
    [usd] = tb.currencies
    assert (usd.currency, usd.total_debits_minor, usd.total_credits_minor) == ("USD", 9999, 9999)
    assert {a.account: a.balance_minor for a in usd.accounts} == {"accounts_receivable": -9999, "cash": 9999}
    assert ledger.verify(store_settings).ok


def test_replay_posts_nothing_and_second_completion_is_refused(store_settings: Settings) -> None:
    e = processed(amount="1000", currency="JPY")
    deliver(store_settings, "ledger", [e, e])
    deliver(store_settings, "ledger", [e])
    assert len(ledger.journal(store_settings)) == 1
    other = processed(amount="1000", currency="JPY", payment_id=e.payment_id)
    with pytest.raises(PoisonEvent, match="already posted"):
        deliver(store_settings, "ledger", [other])
    assert len(ledger.journal(store_settings)) == 1


def test_accounts_per_currency_and_legacy_events_post(store_settings: Settings) -> None:
    events = [processed(amount="1.5", currency="KWD"), processed(amount="0.0001", currency="CLF"),
              processed(amount="5", currency="JPY"), processed(amount="99.99", currency="USD", legacy=True)]
    deliver(store_settings, "ledger", events)
    tb = ledger.balances(store_settings)
    assert [(c.currency, c.total_debits_minor) for c in tb.currencies] == [
        ("CLF", 1), ("JPY", 5), ("KWD", 1500), ("USD", 9999)]
    assert tb.balanced
    legacy = ledger.journal(store_settings, payment_id=events[-1].payment_id)[0]
    assert legacy.legacy and "legacy" in legacy.description and "ORD-789" in legacy.description
    assert ledger.verify(store_settings).ok


def test_post_checks_the_invariants_in_code(store_settings: Settings) -> None:
    L = ledger.Line
    eng = store.engine(store_settings)
    bad = [
        ([L(account="cash", currency="USD", side="D", amount_minor=100),
          L(account="accounts_receivable", currency="USD", side="C", amount_minor=99)], "balance"),
        ([L(account="cash", currency="USD", side="D", amount_minor=100),
          L(account="accounts_receivable", currency="EUR", side="C", amount_minor=100)], "balance"),
        ([L(account="cash", currency="USD", side="D", amount_minor=0),
          L(account="accounts_receivable", currency="USD", side="C", amount_minor=0)], "positive integer"),
        ([L(account="cash", currency="USD", side="D", amount_minor=100)], "at least 2"),
        ([L(account="petty", currency="USD", side="D", amount_minor=1),
          L(account="cash", currency="USD", side="C", amount_minor=1)], "chart of accounts"),
    ]  # fmt: skip
    for lines, msg in bad:
        with pytest.raises(ContractError, match=msg), eng.begin() as conn:
            ledger.post(conn, event_id="e", payment_id="p", lines=lines, description="x",
                        occurred_at=datetime.now(UTC))
    assert ledger.journal(store_settings) == []


def test_database_refuses_update_and_delete_of_the_journal(store_settings: Settings) -> None:
    deliver(store_settings, "ledger", [processed(amount="10.00")])
    eng = store.engine(store_settings)
    for sql in ["UPDATE journal_lines SET amount_minor = amount_minor + 1",
                "UPDATE journal_entries SET description = 'edited'",
                "DELETE FROM journal_lines", "DELETE FROM journal_entries",
                "UPDATE ledger_accounts SET currency = 'EUR'", "DELETE FROM ledger_accounts"]:  # fmt: skip
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), eng.begin() as conn:
            conn.exec_driver_sql(sql)
    if eng.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), eng.begin() as conn:
            conn.exec_driver_sql("TRUNCATE journal_lines, journal_entries")
    [entry] = ledger.journal(store_settings)
    assert [ln.amount_minor for ln in entry.lines] == [1000, 1000]
    assert ledger.verify(store_settings).ok


def test_database_refuses_unbalanced_and_unsealed_entries(store_settings: Settings) -> None:
    eng = store.engine(store_settings)
    deliver(store_settings, "ledger", [processed(amount="10.00")])  # creates the USD accounts
    line = ("INSERT INTO journal_lines (entry_id, line_no, account_code, currency, side, amount_minor)"
            " VALUES ('x', {n}, '{a}', 'USD', '{s}', {m})")  # fmt: skip
    entry = ("INSERT INTO journal_entries (entry_id, event_id, payment_id, kind, description, line_count, occurred_at,"
             " posted_at) VALUES ('x', 'ev-x', 'p-x', 'payment', 'hand-written', 2, 't', 't')")  # fmt: skip
    with pytest.raises(sa.exc.DBAPIError, match="does not balance"), eng.begin() as conn:
        conn.exec_driver_sql(line.format(n=1, a="cash", s="D", m=100))
        conn.exec_driver_sql(line.format(n=2, a="accounts_receivable", s="C", m=90))
        conn.exec_driver_sql(entry)
    with pytest.raises(sa.exc.DBAPIError, match=r"amount_minor|check"), eng.begin() as conn:
        conn.exec_driver_sql(line.format(n=1, a="cash", s="D", m=-5))
    # lines without an entry: refused at commit (SQLite: a deferred foreign key; PostgreSQL: ledger migration 6)
    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)never posted|foreign key"), eng.begin() as conn:
        conn.exec_driver_sql(line.format(n=1, a="cash", s="D", m=100))
        conn.exec_driver_sql(line.format(n=2, a="accounts_receivable", s="C", m=100))
    with pytest.raises(sa.exc.DBAPIError), eng.begin() as conn:  # an account in another currency
        conn.exec_driver_sql(line.format(n=1, a="cash", s="D", m=100).replace("'USD'", "'EUR'"))
    with eng.begin() as conn:  # a balanced hand-written entry is accepted ...
        conn.exec_driver_sql(line.format(n=1, a="cash", s="D", m=100))
        conn.exec_driver_sql(line.format(n=2, a="accounts_receivable", s="C", m=100))
        conn.exec_driver_sql(entry)
    with pytest.raises(sa.exc.DBAPIError, match="already posted"), eng.begin() as conn:  # ... and sealed
        conn.exec_driver_sql(line.format(n=3, a="cash", s="D", m=1))
    assert ledger.verify(store_settings).ok


def test_database_refuses_an_unbalanced_or_unsealed_entry_in_a_batch(store_settings: Settings) -> None:
    """The journal written as the consume path writes it (all lines in one statement, then all entries in one:
    COPY on PostgreSQL, where the guards run once per statement): one unbalanced entry among many, a line for an
    entry posted earlier, an entry missing a line each refuse the whole batch; the batch without them goes in."""
    from payevents.runtime.bulk import copy_rows

    eng = store.engine(store_settings)
    deliver(store_settings, "ledger", [processed(amount="10.00")])  # creates the USD accounts
    [posted] = ledger.journal(store_settings)
    AT = "2025-12-11T10:30:00+00:00"
    line_cols = ("entry_id", "line_no", "account_code", "currency", "side", "amount_minor")
    entry_cols = ("entry_id", "event_id", "payment_id", "kind", "description", "legacy", "line_count", "occurred_at",
                  "posted_at")

    def batch(n: int, *, credit: dict[int, int] | None = None, extra_lines: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
              line_count: dict[int, int] | None = None) -> None:
        ids = [f"b-{i}" for i in range(n)]
        lines = [row for i, e in enumerate(ids) for row in (
            (e, 1, "cash", "USD", "D", 100), (e, 2, "accounts_receivable", "USD", "C", (credit or {}).get(i, 100)))]
        with eng.begin() as conn:
            copy_rows(conn, "journal_lines", line_cols, [*lines, *extra_lines])
            copy_rows(conn, "journal_entries", entry_cols, [
                (e, f"ev-{e}", f"p-{e}", "payment", "batch", 0, (line_count or {}).get(i, 2), AT, AT)
                for i, e in enumerate(ids)])

    with pytest.raises(sa.exc.DBAPIError, match="does not balance"):
        batch(50, credit={37: 99})
    with pytest.raises(sa.exc.DBAPIError, match="already posted"):
        batch(50, extra_lines=[(posted.entry_id, 3, "cash", "USD", "D", 1)])
    with pytest.raises(sa.exc.DBAPIError, match="does not balance"):
        batch(50, line_count={12: 3})
    assert len(ledger.journal(store_settings)) == 1  # nothing of the refused batches
    batch(50)
    assert len(ledger.journal(store_settings)) == 51
    assert ledger.verify(store_settings).ok


def test_reversal_is_a_new_entry(store_settings: Settings) -> None:
    e = processed(amount="12.34")
    deliver(store_settings, "ledger", [e])
    [entry] = ledger.journal(store_settings)
    rev = ledger.reverse(store_settings, entry.entry_id, reason="charged twice")
    assert rev.kind == "correction" and rev.corrects == entry.entry_id
    assert [(ln.account, ln.side) for ln in rev.lines] == [("cash", "C"), ("accounts_receivable", "D")]
    tb = ledger.balances(store_settings)
    assert tb.balanced and all(a.balance_minor == 0 for a in tb.currencies[0].accounts)
    assert len(ledger.journal(store_settings, payment_id=e.payment_id)) == 2


def test_database_refuses_a_line_in_an_unknown_account_or_twice_in_a_batch(store_settings: Settings) -> None:
    """The lines' guards as the consume path meets them (all lines in one statement: COPY on PostgreSQL): a line in
    an account that does not exist in its currency, and a line written twice, each refuse the whole batch. On
    PostgreSQL the line guards run once per statement (ledger migrations 5 and 6): no per-row trigger or foreign key
    on journal_lines, the primary key and the lines' entries checked at commit."""
    from payevents.runtime.bulk import copy_rows

    eng = store.engine(store_settings)
    deliver(store_settings, "ledger", [processed(amount="10.00")])  # creates the USD accounts
    AT = "2025-12-11T10:30:00+00:00"
    line_cols = ("entry_id", "line_no", "account_code", "currency", "side", "amount_minor")
    entry_cols = ("entry_id", "event_id", "payment_id", "kind", "description", "legacy", "line_count", "occurred_at",
                  "posted_at")

    def batch(n: int, *, currency: dict[int, str] | None = None, extra_lines: list[tuple[Any, ...]] = ()) -> None:  # type: ignore[assignment]
        ids = [f"a-{i}" for i in range(n)]
        lines = [row for i, e in enumerate(ids) for row in (
            (e, 1, "cash", (currency or {}).get(i, "USD"), "D", 100), (e, 2, "accounts_receivable", "USD", "C", 100))]
        with eng.begin() as conn:
            copy_rows(conn, "journal_lines", line_cols, [*lines, *extra_lines])
            copy_rows(conn, "journal_entries", entry_cols, [
                (e, f"ev-{e}", f"p-{e}", "payment", "batch", 0, 2, AT, AT) for e in ids])

    with pytest.raises(sa.exc.DBAPIError, match=r"(?i)account|foreign key"):
        batch(50, currency={23: "EUR"})  # no cash account in EUR
    with pytest.raises(sa.exc.IntegrityError):
        batch(50, extra_lines=[("a-7", 2, "accounts_receivable", "USD", "C", 100)])  # a-7's line 2 twice
    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)entry|foreign key"):  # lines whose entry never comes
        batch(50, extra_lines=[("a-never", 1, "cash", "USD", "D", 100),
                               ("a-never", 2, "accounts_receivable", "USD", "C", 100)])
    assert len(ledger.journal(store_settings)) == 1  # nothing of the refused batches
    batch(50)
    assert len(ledger.journal(store_settings)) == 51
    assert ledger.verify(store_settings).ok
    if eng.dialect.name == "postgresql":
        with eng.connect() as conn:
            row_guards = conn.exec_driver_sql(
                "SELECT t.tgname FROM pg_trigger t WHERE t.tgrelid = 'journal_lines'::regclass"
                " AND t.tgtype & 1 = 1 AND t.tgtype & 4 = 4"  # FOR EACH ROW, ON INSERT
                # the deferred primary key's recheck: queued only for a row whose key may collide
                " AND t.tgfoid <> 'unique_key_recheck'::regproc").scalars().all()
            pk_deferred = conn.exec_driver_sql(
                "SELECT condeferrable AND condeferred FROM pg_constraint"
                " WHERE conrelid = 'journal_lines'::regclass AND contype = 'p'").scalar_one()
            awaiting = conn.exec_driver_sql("SELECT COUNT(*) FROM journal_lines_awaiting").scalar_one()
        assert row_guards == [] and pk_deferred
        assert awaiting == 0  # each statement's row is gone once its check ran at commit


def test_verify_reports_tampering(settings: Settings) -> None:
    """With the guards dropped (a rogue DBA on SQLite), verify still catches every broken invariant."""
    deliver(settings, "ledger", [processed(amount="10.00"), processed(amount="5", currency="JPY")])
    assert ledger.verify(settings).ok
    eng = store.engine(settings)
    with eng.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER journal_lines_no_update")
        conn.exec_driver_sql("UPDATE journal_lines SET amount_minor = 999 WHERE currency = 'USD' AND side = 'D'")
    report = ledger.verify(settings)
    assert not report.ok
    rules = {v.rule for v in report.violations}
    assert {"balanced-per-currency", "trial-balance", "database-guard"} <= rules
    assert any("journal_lines_no_update" in v.detail for v in report.violations)


@pytest.mark.parametrize("path", ["per_event", "batch"])
def test_an_unbalanced_posting_rule_is_refused_on_every_path(store_settings: Settings, path: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #12: the batch path used to build its lines inline without the balance check. Now both paths
    are one (decide, then write), so a posting rule that broke the balance is refused in code, on either
    path, and nothing is posted."""
    from money_helpers import message_for

    from payevents.services import load_service
    journal = importlib.import_module("payevents.services.ledger.journal")
    from payevents.store.db import writer

    def unbalanced(currency: str, minor: int) -> list[ledger.Line]:
        return [ledger.Line(account="cash", currency=currency, side="D", amount_minor=minor),
                ledger.Line(account="accounts_receivable", currency=currency, side="C", amount_minor=minor - 1)]

    monkeypatch.setattr(journal, "payment_lines", unbalanced)
    svc = load_service("ledger")
    e = processed(amount="10.00")
    with pytest.raises(PoisonEvent, match="does not balance"), writer(store.engine(store_settings)).begin() as conn:
        if path == "batch":
            assert svc.batch_handler is not None
            svc.batch_handler(conn, [(e, message_for(e))])
        else:
            svc.handlers["PaymentProcessed"](conn, e, message_for(e))
    assert ledger.journal(store_settings) == []


def test_write_checks_every_posting_before_writing_any(store_settings: Settings) -> None:
    journal = importlib.import_module("payevents.services.ledger.journal")

    ok = journal.Posting(event_id="e1", payment_id="p1", description="ok", occurred_at=datetime.now(UTC),
                         lines=journal.payment_lines("USD", 100))
    bad = journal.Posting(event_id="e2", payment_id="p2", description="bad", occurred_at=datetime.now(UTC),
                          lines=[ledger.Line(account="cash", currency="USD", side="D", amount_minor=100),
                                 ledger.Line(account="accounts_receivable", currency="USD", side="C", amount_minor=1)])
    with pytest.raises(ContractError, match="does not balance"), store.engine(store_settings).begin() as conn:
        journal.write(conn, [ok, bad])
    assert ledger.journal(store_settings) == []


def test_the_database_refuses_what_write_sends_past_the_code_check(store_settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #14: on PostgreSQL ``write`` sends lines and entries with COPY. Row triggers fire on COPY as on
    INSERT: with the code check switched off, an unbalanced entry, lines added to a posted entry and a second
    entry for a payment are refused by the database through the very same path (COPY proven used)."""
    from payevents.runtime import bulk

    journal = importlib.import_module("payevents.services.ledger.journal")
    copies: list[str] = []
    real_copy = bulk._copy

    def spy(conn: sa.engine.Connection, sql: str, rows: object) -> None:
        copies.append(sql)
        real_copy(conn, sql, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "_copy", spy)
    eng = store.engine(store_settings)

    def posting(event_id: str, payment_id: str, credit: int) -> object:
        return journal.Posting(event_id=event_id, payment_id=payment_id, description="t",
                               occurred_at=datetime.now(UTC),
                               lines=[ledger.Line(account="cash", currency="USD", side="D", amount_minor=100),
                                      ledger.Line(account="accounts_receivable", currency="USD", side="C",
                                                  amount_minor=credit)])

    with eng.begin() as conn:  # a balanced entry goes in (and creates the accounts)
        [posted] = journal.write(conn, [posting("e1", "p1", 100)])
    monkeypatch.setattr(journal, "check_balanced", lambda lines: None)
    with pytest.raises(sa.exc.IntegrityError, match="does not balance"), eng.begin() as conn:
        journal.write(conn, [posting("e2", "p2", 100), posting("e3", "p3", 90)])
    with pytest.raises(sa.exc.IntegrityError, match="already posted"), eng.begin() as conn:
        journal.write(conn, [posting("e1", "p1", 100)])  # same event id: lines for a sealed entry
    with pytest.raises(sa.exc.IntegrityError), eng.begin() as conn:
        journal.write(conn, [posting("e4", "p1", 100)])  # a second payment entry for p1 (unique index)
    if eng.dialect.name == "postgresql":
        assert any(s.startswith("COPY journal_lines") for s in copies)
        assert any(s.startswith("COPY journal_entries") for s in copies)
    else:
        assert copies == []
    assert [e.entry_id for e in ledger.journal(store_settings)] == [posted]
    assert ledger.verify(store_settings).ok


def test_a_journal_at_migration_3_upgrades_and_keeps_its_guards(store_settings: Settings) -> None:
    """Ledger migration 4 (no index of lines by account; payment_id indexed once per entry) on a database written
    at version 3: every line kept, verify clean, the trial balance right, a payment's entries (its correction too)
    still found, and the database still refuses an unbalanced entry, a line for a posted entry, and UPDATE/DELETE
    of the lines."""
    from payevents.services.ledger.journal import on_payment_processed
    from payevents.store import db

    old = db.engine_for(store_settings, store.SERVICE)
    db.migrate(old, store.SERVICE, [m for m in store.MIGRATIONS if m.version <= 3])
    e1, e2 = processed(amount="10.00"), processed(amount="5", currency="JPY")
    with old.begin() as conn:
        for e in (e1, e2):
            on_payment_processed(conn, e)
    db.dispose_engines()

    eng = store.engine(store_settings)  # migrates to the newest version
    with eng.connect() as conn:
        versions = {int(r[0]) for r in conn.exec_driver_sql(
            "SELECT version FROM schema_migrations WHERE service = 'ledger'")}
        assert max(versions) == max(m.version for m in store.MIGRATIONS)
        if eng.dialect.name == "sqlite":
            indexes = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
        else:
            indexes = set(conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()").scalars())
        assert "ix_journal_corrections_payment" in indexes and "ux_journal_payment_entry" in indexes
        assert not indexes & {"ix_journal_lines_account", "ix_journal_entries_payment"}
    entries = ledger.journal(store_settings)
    assert sorted(ln.amount_minor for en in entries for ln in en.lines) == [5, 5, 1000, 1000]
    tb = ledger.balances(store_settings)
    assert tb.balanced and tb.entries == 2
    assert {(c.currency, c.total_debits_minor) for c in tb.currencies} == {("USD", 1000), ("JPY", 5)}
    assert ledger.verify(store_settings).ok

    line = ("INSERT INTO journal_lines (entry_id, line_no, account_code, currency, side, amount_minor)"
            " VALUES ('{e}', {n}, '{a}', 'USD', '{s}', {m})")  # fmt: skip
    entry = ("INSERT INTO journal_entries (entry_id, event_id, payment_id, kind, description, line_count, occurred_at,"
             " posted_at) VALUES ('x', 'ev-x', 'p-x', 'payment', 'hand-written', 2, 't', 't')")  # fmt: skip
    with pytest.raises(sa.exc.DBAPIError, match="does not balance"), eng.begin() as conn:
        conn.exec_driver_sql(line.format(e="x", n=1, a="cash", s="D", m=100))
        conn.exec_driver_sql(line.format(e="x", n=2, a="accounts_receivable", s="C", m=90))
        conn.exec_driver_sql(entry)
    with pytest.raises(sa.exc.DBAPIError, match="already posted"), eng.begin() as conn:
        conn.exec_driver_sql(line.format(e=entries[0].entry_id, n=3, a="cash", s="D", m=1))
    for sql in ["UPDATE journal_lines SET amount_minor = amount_minor + 1", "DELETE FROM journal_lines"]:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), eng.begin() as conn:
            conn.exec_driver_sql(sql)
    deliver(store_settings, "ledger", [processed(amount="2.50")])  # and it goes on posting, and correcting
    ledger.reverse(store_settings, entries[0].entry_id, reason="charged twice")
    assert [en.kind for en in ledger.journal(store_settings, payment_id=entries[0].payment_id)] == [
        "payment", "correction"]
    assert ledger.balances(store_settings).entries == 4
    assert ledger.verify(store_settings).ok


def test_verify_names_the_dropped_check_of_the_lines_entries(pg_settings: Settings) -> None:
    """PostgreSQL checks that every line's entry exists at commit with a constraint trigger (ledger migration 6):
    dropped, lines without an entry go in, and verify names both the orphan lines and the missing guard."""
    deliver(pg_settings, "ledger", [processed(amount="10.00")])  # creates the USD accounts
    assert ledger.verify(pg_settings).ok
    with store.engine(pg_settings).begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER journal_lines_posted ON journal_lines_awaiting")
        conn.exec_driver_sql("INSERT INTO journal_lines (entry_id, line_no, account_code, currency, side,"
                             " amount_minor) VALUES ('x', 1, 'cash', 'USD', 'D', 100),"
                             " ('x', 2, 'accounts_receivable', 'USD', 'C', 100)")
    report = ledger.verify(pg_settings)
    assert {"orphan-line", "database-guard"} <= {v.rule for v in report.violations}
    assert any("journal_lines_posted" in v.detail for v in report.violations)
