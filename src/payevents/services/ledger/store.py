"""The Ledger's store: accounts per currency, an append-only double-entry journal.

Invariants are stated in code (:func:`payevents.services.ledger.journal.post`) and again in the
database, so a bug or a hand-written SQL statement cannot break them:

* every line has a currency and a positive integer amount in minor units (CHECK);
* a line's account exists in the line's currency (SQLite: composite foreign key; PostgreSQL: checked once per
  statement over its new lines, accounts being append-only);
* an entry balances per currency: lines are inserted first and the entry row seals them — a trigger
  refuses the entry unless its lines balance (debits = credits per currency) and their count
  matches (SQLite: per row; PostgreSQL: once per statement over its new entries); another trigger
  refuses lines added to a sealed entry (SQLite: per row; PostgreSQL: once per statement); lines whose entry
  never arrives are refused at commit (SQLite: a deferred foreign key; PostgreSQL: one deferred check per
  statement of lines, migration 6);
* the journal is append-only: UPDATE, DELETE (and TRUNCATE) are refused by triggers; corrections
  are new entries;
* one entry per eventId, and one payment entry per paymentId (unique indexes).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import Connection, Engine

from payevents.settings import Settings
from payevents.store.db import Migration, connect, dialect

SERVICE: Final = "ledger"
APPEND_ONLY: Final = "journal is append-only"
UNBALANCED: Final = "journal entry does not balance per currency"
SEALED: Final = "journal entry is already posted"
NO_ACCOUNT: Final = "journal line: no such account in that currency"
NO_ENTRY: Final = "journal line: its entry was never posted"

_TABLES: Final = [
    """CREATE TABLE ledger_accounts (
        code VARCHAR(40) NOT NULL,
        currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
        name VARCHAR(100) NOT NULL,
        kind VARCHAR(16) NOT NULL CHECK (kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
        created_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (code, currency)
    )""",
    """CREATE TABLE journal_entries (
        entry_id VARCHAR(64) PRIMARY KEY,
        event_id VARCHAR(128) NOT NULL UNIQUE,
        payment_id VARCHAR(255) NOT NULL,
        kind VARCHAR(16) NOT NULL CHECK (kind IN ('payment', 'correction')),
        description TEXT NOT NULL,
        legacy SMALLINT NOT NULL DEFAULT 0 CHECK (legacy IN (0, 1)),
        line_count INTEGER NOT NULL CHECK (line_count >= 2),
        occurred_at VARCHAR(40) NOT NULL,
        posted_at VARCHAR(40) NOT NULL,
        corrects VARCHAR(64) REFERENCES journal_entries (entry_id),
        CHECK ((kind = 'correction') = (corrects IS NOT NULL))
    )""",
    "CREATE INDEX ix_journal_entries_payment ON journal_entries (payment_id)",
    "CREATE UNIQUE INDEX ux_journal_payment_entry ON journal_entries (payment_id) WHERE kind = 'payment'",
    "CREATE UNIQUE INDEX ux_journal_correction ON journal_entries (corrects) WHERE kind = 'correction'",
    """CREATE TABLE journal_lines (
        entry_id VARCHAR(64) NOT NULL REFERENCES journal_entries (entry_id) DEFERRABLE INITIALLY DEFERRED,
        line_no INTEGER NOT NULL CHECK (line_no >= 1),
        account_code VARCHAR(40) NOT NULL,
        currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
        side CHAR(1) NOT NULL CHECK (side IN ('D', 'C')),
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        PRIMARY KEY (entry_id, line_no),
        FOREIGN KEY (account_code, currency) REFERENCES ledger_accounts (code, currency)
    )""",
    "CREATE INDEX ix_journal_lines_account ON journal_lines (account_code, currency)",
]

_BALANCE_CONDITION: Final = """
    NEW.line_count < 2
    OR (SELECT COUNT(*) FROM journal_lines WHERE entry_id = NEW.entry_id) <> NEW.line_count
    OR EXISTS (SELECT 1 FROM journal_lines WHERE entry_id = NEW.entry_id GROUP BY currency
               HAVING SUM(CASE side WHEN 'D' THEN amount_minor ELSE -amount_minor END) <> 0)"""

_SQLITE_TRIGGERS: Final = [
    f"""CREATE TRIGGER journal_entries_balanced BEFORE INSERT ON journal_entries
        WHEN {_BALANCE_CONDITION}
        BEGIN SELECT RAISE(ABORT, '{UNBALANCED}'); END""",
    f"""CREATE TRIGGER journal_lines_sealed BEFORE INSERT ON journal_lines
        WHEN EXISTS (SELECT 1 FROM journal_entries WHERE entry_id = NEW.entry_id)
        BEGIN SELECT RAISE(ABORT, '{SEALED}: lines cannot be added'); END""",
    *[
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
            BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: {op} on {table} refused'); END"""
        for table in ("journal_entries", "journal_lines", "ledger_accounts")
        for op in ("UPDATE", "DELETE")
    ],
]

_PG_TRIGGERS: Final = [
    f"""CREATE OR REPLACE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            RAISE EXCEPTION USING MESSAGE = '{APPEND_ONLY}: ' || TG_OP || ' on ' || TG_TABLE_NAME || ' refused',
                                  ERRCODE = 'restrict_violation';
        END
        $fn$""",
    f"""CREATE OR REPLACE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF {_BALANCE_CONDITION} THEN
                RAISE EXCEPTION USING MESSAGE = '{UNBALANCED}: ' || NEW.entry_id, ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END
        $fn$""",
    f"""CREATE OR REPLACE FUNCTION journal_line_sealed() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF EXISTS (SELECT 1 FROM journal_entries WHERE entry_id = NEW.entry_id) THEN
                RAISE EXCEPTION USING MESSAGE = '{SEALED}: lines cannot be added to ' || NEW.entry_id,
                                      ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END
        $fn$""",
    """CREATE TRIGGER journal_entries_balanced BEFORE INSERT ON journal_entries
        FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced()""",
    """CREATE TRIGGER journal_lines_sealed BEFORE INSERT ON journal_lines
        FOR EACH ROW EXECUTE FUNCTION journal_line_sealed()""",
    *[
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
            FOR EACH {"STATEMENT" if op == "TRUNCATE" else "ROW"} EXECUTE FUNCTION journal_append_only()"""
        for table in ("journal_entries", "journal_lines", "ledger_accounts")
        for op in ("UPDATE", "DELETE", "TRUNCATE")
    ],
]

#: PostgreSQL (issue #14): the balance guard once per statement instead of once per row. A batch of entries is
#: written as two statements (all lines by COPY, then all entries by COPY); the row trigger ran two plpgsql queries
#: per entry, the statement trigger runs one set-based query over the statement's new rows (its transition table).
#: The rule is the row trigger's (the lines an entry's statement sees are the same: an INSERT on journal_entries
#: never writes lines), the error too (the first offending entry is named). The seal stays a BEFORE row trigger on
#: the lines: it must refuse a line for a posted entry before the primary key does (one probe per line).
_PG_STATEMENT_TRIGGERS: Final = [
    f"""CREATE OR REPLACE FUNCTION journal_entries_balanced_stmt() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE bad text;
        BEGIN
            SELECT e.entry_id INTO bad FROM new_entries e
            LEFT JOIN LATERAL (
                SELECT SUM(per.n) AS n, COUNT(*) FILTER (WHERE per.net <> 0) AS unbalanced FROM (
                    SELECT COUNT(*) AS n, SUM(CASE l.side WHEN 'D' THEN l.amount_minor ELSE -l.amount_minor END) AS net
                    FROM journal_lines l WHERE l.entry_id = e.entry_id GROUP BY l.currency) per) s ON true
            WHERE e.line_count < 2 OR COALESCE(s.n, 0) <> e.line_count OR s.unbalanced > 0
            LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION USING MESSAGE = '{UNBALANCED}: ' || bad, ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END
        $fn$""",
    "DROP TRIGGER IF EXISTS journal_entries_balanced ON journal_entries",
    """CREATE TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries REFERENCING NEW TABLE AS new_entries
        FOR EACH STATEMENT EXECUTE FUNCTION journal_entries_balanced_stmt()""",
]

#: issue #14, indexes each posting paid for and nothing needs (every insert writes every index of its table):
#: * ix_journal_lines_account: no query reads lines by account (the trial balance sums the lines per account in
#:   one pass, then joins the accounts); the foreign key to ledger_accounts would use it only for an UPDATE or
#:   DELETE of an account, which the append-only triggers refuse;
#: * a payment entry's payment_id was in two indexes (ix_journal_entries_payment, all entries, and the unique
#:   ux_journal_payment_entry, payment entries): the general one now holds the corrections only, and a payment's
#:   entries are read through both partial indexes (journal.PAYMENT_ENTRIES).
#: (WITHOUT ROWID for journal_lines was measured too: no gain — its random primary key costs the same pages.)
_INDEXES_V4: Final = [
    "DROP INDEX ix_journal_lines_account",
    "DROP INDEX ix_journal_entries_payment",
    "CREATE INDEX ix_journal_corrections_payment ON journal_entries (payment_id) WHERE kind = 'correction'",
]


def _lines_checked_stmt(then: str = "") -> str:
    """The lines' statement guard (migration 5; migration 6 adds ``then`` before its RETURN: the statement's row of
    journal_lines_awaiting). Migration 5's text is this with nothing added: a migration's SQL never changes."""
    return f"""CREATE OR REPLACE FUNCTION journal_lines_checked_stmt() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE bad text;
        BEGIN
            SELECT n.entry_id INTO bad FROM (SELECT DISTINCT entry_id FROM new_lines) n
            WHERE EXISTS (SELECT 1 FROM journal_entries e WHERE e.entry_id = n.entry_id) LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION USING MESSAGE = '{SEALED}: lines cannot be added to ' || bad,
                                      ERRCODE = 'check_violation';
            END IF;
            SELECT n.account_code || ' ' || n.currency INTO bad
            FROM (SELECT DISTINCT account_code, currency FROM new_lines) n
            WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.code = n.account_code AND a.currency = n.currency)
            LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION USING MESSAGE = '{NO_ACCOUNT}: ' || bad, ERRCODE = 'foreign_key_violation';
            END IF;{then}
            RETURN NULL;
        END
        $fn$"""


#: PostgreSQL (issue #14, second round): the lines' row-level guards once per statement. EXPLAIN ANALYZE of a batch
#: of 500 entries (1,000 lines) showed two per-row triggers on journal_lines costing about as much as the inserts
#: themselves: the seal (a plpgsql probe of journal_entries per line) and the foreign key to ledger_accounts (an RI
#: probe that also locks the account row, per line). Both become one set-based query over the statement's new
#: lines (its transition table), same rules, same error texts:
#: * sealed: no new line may belong to an entry already posted (one probe per new entry id);
#: * account: every new line's (account, currency) exists in ledger_accounts (one probe per distinct pair). This is
#:   the whole of what the foreign key enforced: accounts are append-only (UPDATE, DELETE and TRUNCATE are refused by
#:   triggers), so an account that existed when its line went in exists for good. SQLite keeps the foreign key.
#: The seal used to be a BEFORE row trigger so that it refused a line of a posted entry before the primary key did (a
#: re-written entry's line 1 collides with its own line 1); an AFTER statement trigger runs after the primary key's
#: check, so the primary key becomes DEFERRABLE INITIALLY DEFERRED: still unique, checked at commit (a duplicate line
#: of an entry not posted yet is refused then), and the seal speaks first.
_PG_LINE_STATEMENT_TRIGGERS: Final = [
    _lines_checked_stmt(),
    "DROP TRIGGER IF EXISTS journal_lines_sealed ON journal_lines",
    """CREATE TRIGGER journal_lines_sealed AFTER INSERT ON journal_lines REFERENCING NEW TABLE AS new_lines
        FOR EACH STATEMENT EXECUTE FUNCTION journal_lines_checked_stmt()""",
    "DROP FUNCTION IF EXISTS journal_line_sealed()",
    "ALTER TABLE journal_lines DROP CONSTRAINT IF EXISTS journal_lines_account_code_currency_fkey",
    """ALTER TABLE journal_lines DROP CONSTRAINT journal_lines_pkey,
        ADD CONSTRAINT journal_lines_pkey PRIMARY KEY (entry_id, line_no) DEFERRABLE INITIALLY DEFERRED""",
]

#: PostgreSQL (issue #14, third round): the lines' entries checked once per statement at commit. The deferred foreign
#: key from journal_lines to journal_entries (lines go in first, their entries after) queued one RI check per line
#: for the commit: a probe of journal_entries that also locks the entry row (a WAL record per line); `consume_pg.py
#: ledger` measured 10 to 25 µs of the server's CPU an event for it. PostgreSQL's statement triggers cannot be
#: deferred, so the lines' statement guard (migration 5) leaves one row per statement in journal_lines_awaiting —
#: the statement's entry ids as an array — and a deferred constraint trigger on that row checks at commit, in one
#: query, that every one of those entries exists (then removes the row). Same rule as the foreign key: lines whose
#: entry never arrives are refused at commit (foreign_key_violation, naming the entry), `SET CONSTRAINTS ALL
#: IMMEDIATE` checks it at the statement's end; entries are append-only, so an entry that existed at commit exists
#: for good. The table is UNLOGGED: its rows live for one transaction.
_PG_LINES_POSTED: Final = [
    """CREATE UNLOGGED TABLE journal_lines_awaiting (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        entry_ids TEXT[] NOT NULL
    )""",
    f"""CREATE OR REPLACE FUNCTION journal_lines_posted_check() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE bad text;
        BEGIN
            DELETE FROM journal_lines_awaiting WHERE id = NEW.id;
            SELECT x INTO bad FROM unnest(NEW.entry_ids) x
            WHERE NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.entry_id = x) LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION USING MESSAGE = '{NO_ENTRY}: ' || bad, ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END
        $fn$""",
    """CREATE CONSTRAINT TRIGGER journal_lines_posted AFTER INSERT ON journal_lines_awaiting
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_lines_posted_check()""",
    _lines_checked_stmt("""
            INSERT INTO journal_lines_awaiting (entry_ids)
            SELECT array_agg(DISTINCT entry_id) FROM new_lines HAVING COUNT(*) > 0;"""),
    "ALTER TABLE journal_lines DROP CONSTRAINT journal_lines_entry_id_fkey",
]

MIGRATIONS: Final[list[Migration]] = [
    Migration(1, "accounts and journal", both=_TABLES),
    Migration(2, "journal invariants: balanced, sealed, append-only", sqlite=_SQLITE_TRIGGERS, postgresql=_PG_TRIGGERS),
    # SQLite has no statement triggers: its row triggers stay (nothing to do there)
    Migration(3, "journal entries balanced: checked per statement on PostgreSQL", postgresql=_PG_STATEMENT_TRIGGERS),
    Migration(4, "journal: no index of lines by account; payment_id indexed once per entry", both=_INDEXES_V4),
    Migration(5, "journal lines sealed and in a known account: checked per statement on PostgreSQL",
              postgresql=_PG_LINE_STATEMENT_TRIGGERS),
    Migration(6, "journal lines' entries: checked once per statement at commit on PostgreSQL",
              postgresql=_PG_LINES_POSTED),
]

#: trigger names verify() expects to find (a dropped guard is a violation)
GUARD_TRIGGERS: Final = frozenset(
    {"journal_entries_balanced", "journal_lines_sealed"}
    | {f"{t}_no_{op}" for t in ("journal_entries", "journal_lines", "ledger_accounts") for op in ("update", "delete")}
)

#: and on PostgreSQL the deferred check of the lines' entries (migration 6; SQLite's foreign key does it there)
PG_GUARD_TRIGGERS: Final = frozenset({"journal_lines_posted"})


def guard_triggers(conn: Connection) -> frozenset[str]:
    """The trigger names verify() expects on this connection's database."""
    return GUARD_TRIGGERS | PG_GUARD_TRIGGERS if conn.dialect.name == "postgresql" else GUARD_TRIGGERS


def engine(settings: Settings) -> Engine:
    """The ledger database, migrated once per engine per process."""
    return connect(settings, SERVICE, MIGRATIONS)


def trigger_names(conn: Connection) -> set[str]:
    return dialect(conn).trigger_names(conn)
