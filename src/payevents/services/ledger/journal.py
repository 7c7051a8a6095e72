"""Posting to the journal, the PaymentProcessed handler, and the ledger's reads and verification."""

from __future__ import annotations

import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts import ids
from payevents.contracts.cardguard import safe_repr
from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import PaymentProcessed
from payevents.contracts.money import MAX_MINOR, MINOR_UNITS, amount_ok, exponent, from_minor, parse_minor
from payevents.errors import ContractError, NotFound, PoisonEvent
from payevents.runtime.bulk import copy_rows, lookup
from payevents.services.ledger import store
from payevents.settings import Settings
from payevents.store.db import dialect
from payevents.store.paging import after_clause
from payevents.store.sums import combine, exact_sum
from payevents.transport.base import Message

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://payevents.local/services/ledger/entries")

#: the chart of accounts (each exists once per currency, created on first use)
ACCOUNTS: Final[dict[str, tuple[str, str]]] = {
    "cash": ("Cash", "asset"),
    "accounts_receivable": ("Accounts Receivable", "asset"),
}
CASH: Final = "cash"
RECEIVABLE: Final = "accounts_receivable"


class Line(msgspec.Struct, kw_only=True, frozen=True):
    account: str
    currency: str
    side: str  # "D" debit, "C" credit
    amount_minor: int


class JournalLine(msgspec.Struct, kw_only=True, frozen=True):
    line_no: int
    account: str
    account_name: str
    currency: str
    side: str
    amount_minor: int
    amount: Decimal


class JournalEntry(msgspec.Struct, kw_only=True, frozen=True):
    entry_id: str
    event_id: str
    payment_id: str
    kind: str
    description: str
    legacy: bool
    occurred_at: datetime
    posted_at: datetime
    lines: list[JournalLine]
    corrects: str | None = None


# -- posting ---------------------------------------------------------------------------------------------


def check_balanced(lines: Sequence[Line]) -> None:
    """The code half of the invariants: ≥ 2 lines, known accounts, valid currency, positive integer
    minor units, debits = credits per currency. Raises ContractError naming the rule."""
    if len(lines) < 2:
        raise ContractError(f"lines: an entry needs at least 2 lines, got {len(lines)}")
    net: dict[str, int] = {}
    debits: dict[str, int] = {}
    for i, ln in enumerate(lines):
        if ln.account not in ACCOUNTS:
            raise ContractError(f"lines[{i}].account: {ln.account!r} is not in the chart of accounts")
        cur = ln.currency
        if type(cur) is not str or cur not in MINOR_UNITS:
            exponent(cur)  # raises the ContractError naming the code
        side = ln.side
        if side != "D" and side != "C":
            raise ContractError(f"lines[{i}].side: {side!r} must be 'D' or 'C'")
        amount = ln.amount_minor
        if type(amount) is not int or amount <= 0:  # a bool (or an int subclass) is refused too
            raise ContractError(f"lines[{i}].amount_minor: {amount!r} must be a positive integer")
        if side == "D":
            net[cur] = net.get(cur, 0) + amount
            debits[cur] = debits.get(cur, 0) + amount
        else:
            net[cur] = net.get(cur, 0) - amount
    too_large = {c: d for c, d in debits.items() if d > MAX_MINOR}
    if too_large:
        raise ContractError(f"lines: the debits of one entry are above {MAX_MINOR} minor units per currency"
                            f" ({too_large}): no real payment reaches that")
    unbalanced = {c: n for c, n in net.items() if n != 0}
    if unbalanced:
        raise ContractError(f"lines: {store.UNBALANCED} (debits - credits: {unbalanced})")


class Posting(msgspec.Struct, kw_only=True, frozen=True):
    """One entry to post: what an event (or a correction) means for the journal, decided before any write."""

    event_id: str
    payment_id: str
    lines: list[Line]
    description: str
    occurred_at: datetime
    kind: str = "payment"
    legacy: bool = False
    corrects: str | None = None


_ACCOUNT_COLUMNS: Final = ("code", "currency", "name", "kind", "created_at")
_LINE_COLUMNS: Final = ("entry_id", "line_no", "account_code", "currency", "side", "amount_minor")
_ENTRY_COLUMNS: Final = ("entry_id", "event_id", "payment_id", "kind", "description", "legacy", "line_count",
                         "occurred_at", "posted_at", "corrects")


def _ensured(conn: Connection) -> set[tuple[str, str]]:
    """Accounts known to exist in the current transaction (a hot path posts thousands of entries per
    transaction; the cache dies with the transaction, so a rollback can never leave it wrong)."""
    tx = conn.get_transaction()
    cache = conn.info.get("ledger.accounts")
    if cache is None or cache[0]() is not tx:
        cache = conn.info["ledger.accounts"] = (weakref.ref(tx) if tx is not None else lambda: None, set())
    return cache[1]  # type: ignore[no-any-return]


def _entry_id(event_id: str) -> str:
    """uuid5(NAMESPACE, eventId), carrying the eventId's time when it has one (:func:`payevents.contracts.ids.derived`:
    the journal's keys then grow with the payments' time, as the eventIds our producer makes do)."""
    return ids.derived(NAMESPACE, event_id, event_id)


def write(conn: Connection, postings: Sequence[Posting]) -> list[str]:
    """The one way entries reach the journal (payments, one or a whole batch, and corrections): every entry is
    checked in code first (:func:`check_balanced`, nothing written if one fails), then all lines and all entries
    go in two statements (COPY on PostgreSQL, executemany on SQLite), and the database checks each entry again
    (lines sealed by their entry, balanced per currency, one entry per event and one payment entry per payment).
    Returns the entry ids."""
    for p in postings:
        check_balanced(p.lines)
    if not postings:
        return []
    now = datetime.now(UTC).isoformat()
    accounts = {(ln.account, ln.currency) for p in postings for ln in p.lines} - _ensured(conn)
    if accounts:
        # INSERT ... ON CONFLICT (code, currency) DO NOTHING, in the same bulk form as the lines (a write-behind
        # batch defers it with them: runtime.writebehind)
        copy_rows(conn, "ledger_accounts", _ACCOUNT_COLUMNS,
                  [(a, c, ACCOUNTS[a][0], ACCOUNTS[a][1], now) for a, c in sorted(accounts)],
                  or_ignore="code, currency", usually_there=True)
        _ensured(conn).update(accounts)
    ids = [_entry_id(p.event_id) for p in postings]
    # lines first, then the entries that seal them: COPY on PostgreSQL (one statement per batch; row triggers
    # fire on COPY as on INSERT, so the database still refuses an unbalanced or unsealed entry), executemany on
    # SQLite (runtime.bulk.copy_rows)
    copy_rows(conn, "journal_lines", _LINE_COLUMNS, [
        (eid, i, ln.account, ln.currency, ln.side, ln.amount_minor)
        for eid, p in zip(ids, postings, strict=True) for i, ln in enumerate(p.lines, start=1)])
    copy_rows(conn, "journal_entries", _ENTRY_COLUMNS, [
        (eid, p.event_id, p.payment_id, p.kind, p.description, int(p.legacy), len(p.lines), p.occurred_at.isoformat(),
         now, p.corrects) for eid, p in zip(ids, postings, strict=True)])
    return ids


def post(
    conn: Connection,
    *,
    event_id: str,
    payment_id: str,
    lines: Sequence[Line],
    description: str,
    occurred_at: datetime,
    kind: str = "payment",
    legacy: bool = False,
    corrects: str | None = None,
) -> str:
    """Post one balanced entry inside the caller's transaction; returns its entry id (uuid5 of the event id)."""
    [entry_id] = write(conn, [Posting(event_id=event_id, payment_id=payment_id, lines=list(lines),
                                      description=description, occurred_at=occurred_at, kind=kind, legacy=legacy,
                                      corrects=corrects)])  # fmt: skip
    return entry_id


# -- the PaymentProcessed handler: decide (pure), then apply the whole batch -------------------------------


def payment_lines(currency: str, minor: int) -> list[Line]:
    """The posting rule of a completed payment: debit Cash, credit Accounts Receivable."""
    return [Line(account=CASH, currency=currency, side="D", amount_minor=minor),
            Line(account=RECEIVABLE, currency=currency, side="C", amount_minor=minor)]  # fmt: skip


def decide(decoded: DecodedEvent, posted_by: str | None) -> Posting | None:
    """What a PaymentProcessed means for the journal, given the eventId that already posted its payment (if any):
    a :class:`Posting`, or None for a replay of that same event. Pure: reads nothing, writes nothing.

    Raises PoisonEvent for anything else than a valid PaymentProcessed, for a second completion of a payment
    already posted, and for a posting that breaks the journal's invariants (:func:`check_balanced`)."""
    event = decoded.event
    if not isinstance(event, PaymentProcessed):
        raise PoisonEvent(f"ledger: expected PaymentProcessed, got {decoded.event_type}")
    d = event.data
    if posted_by is not None:
        if posted_by == event.eventId:
            return None  # a replay: already posted
        raise PoisonEvent(f"ledger: payment {d.paymentId} was already posted by event {posted_by};"
                          f" PaymentProcessed {event.eventId} is a second completion of the same payment")
    try:
        value, code = d.amount.value, d.amount.currency
        if type(value) is Decimal and amount_ok(value, code):  # the codec's own check: exact, > 0, bounded
            minor = int(value.scaleb(MINOR_UNITS[code]))
        else:  # parse_minor says why (or converts what amount_ok does not take)
            minor = parse_minor(value, code, field="data.amount.value")
        lines = payment_lines(code, minor)
        check_balanced(lines)
    except ContractError as exc:
        raise PoisonEvent(f"ledger: {exc}") from None
    return Posting(event_id=event.eventId, payment_id=d.paymentId, lines=lines, description=_description(decoded),
                   occurred_at=d.processedAt, legacy=decoded.legacy)


def on_payment_processed_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message | None]]) -> None:
    """PaymentProcessed → one balanced entry each: debit Cash, credit Accounts Receivable (legacy events too).

    The ledger's one path (a single event is a batch of one): one query for the payments already posted,
    :func:`decide` per event in order, then :func:`write` for all entries. A replay of the same eventId posts
    nothing; another PaymentProcessed for a payment already posted (also earlier in the same batch) raises
    PoisonEvent, and the runtime re-applies the batch one event at a time to dead-letter just that one."""
    pids = list(dict.fromkeys(d.payment_id for d, _ in batch))
    # one probe of the unique payment-entry index per paymentId on PostgreSQL, IN lists on SQLite (runtime.bulk)
    posted: dict[str, str] = {r[0]: r[1] for r in lookup(conn, "payment_id, event_id", "journal_entries",
                                                         "kind = 'payment'", "payment_id", pids)}
    postings: list[Posting] = []
    for decoded, _message in batch:
        posting = decide(decoded, posted.get(decoded.payment_id))
        if posting is not None:
            posted[posting.payment_id] = posting.event_id
            postings.append(posting)
    write(conn, postings)


def on_payment_processed(conn: Connection, decoded: DecodedEvent, message: Message | None = None) -> None:
    """One event: :func:`on_payment_processed_batch` with a batch of one (there is one semantics)."""
    on_payment_processed_batch(conn, [(decoded, message)])


def fact_history(conn: Connection) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """The completions posted before the one-fact rule existed (runtime.facts): one per payment entry."""
    from payevents.runtime.facts import content_from

    for r in conn.exec_driver_sql(
        "SELECT e.payment_id, e.event_id, l.currency, l.amount_minor FROM journal_entries e"
        " JOIN journal_lines l ON l.entry_id = e.entry_id AND l.line_no = 1 WHERE e.kind = 'payment'"
        " ORDER BY e.posted_at, e.entry_id"
    ):
        yield r[0], "PaymentProcessed", r[1], content_from(from_minor(int(r[3]), r[2]), r[2])


def _description(decoded: DecodedEvent) -> str:
    d = decoded.event.data
    meta = getattr(d, "metadata", None)
    parts = [f"Payment {d.paymentId}"]
    desc = getattr(meta, "description", None) if meta is not None else None
    order = getattr(meta, "orderId", None) if meta is not None else None
    if isinstance(desc, str):
        parts.append(desc)
    if isinstance(order, str):
        parts.append(f"order {order}")
    invoice = getattr(d, "invoiceId", None)
    if isinstance(invoice, str):
        parts.append(f"invoice {invoice}")
    if decoded.legacy:
        parts.append("legacy PAYMENT_PROCESSED 1.0")
    return " · ".join(parts)


def reverse(settings: Settings, entry_id: str, *, reason: str) -> JournalEntry:
    """Correct a posted entry the only way the journal allows: a new entry with every line reversed."""
    if not isinstance(reason, str) or not reason.strip():
        raise ContractError("reason: required non-empty string")
    eng = store.engine(settings)
    with eng.begin() as conn:
        original = _load_entries(conn, "e.entry_id = :eid", {"eid": entry_id})
        if not original:
            raise NotFound(f"journal entry {safe_repr(entry_id)}: not found")
        e = original[0]
        flip = {"D": "C", "C": "D"}
        lines = [Line(account=ln.account, currency=ln.currency, side=flip[ln.side], amount_minor=ln.amount_minor)
                 for ln in e.lines]
        new_id = post(conn, event_id=f"reversal:{e.entry_id}", payment_id=e.payment_id, kind="correction",
                      description=f"Reversal of {e.entry_id}: {reason}", occurred_at=datetime.now(UTC),
                      corrects=e.entry_id, lines=lines)  # fmt: skip
        return _load_entries(conn, "e.entry_id = :eid", {"eid": new_id})[0]


# -- reads -----------------------------------------------------------------------------------------------


def _load_entries(conn: Connection, where: str, args: dict[str, Any], limit: int | None = None,
                  *, newest_first: bool = False) -> list[JournalEntry]:
    order = "e.posted_at DESC, e.entry_id" if newest_first else "e.posted_at, e.entry_id"
    sql = f"SELECT * FROM journal_entries e WHERE {where} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    entries = conn.execute(sa.text(sql), args).all()
    if not entries:
        return []
    lines: dict[str, list[JournalLine]] = defaultdict(list)
    ids = [e.entry_id for e in entries]
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            sa.text(
                "SELECT l.entry_id, l.line_no, l.account_code, l.currency, l.side, l.amount_minor, a.name"
                " FROM journal_lines l JOIN ledger_accounts a ON a.code = l.account_code AND a.currency = l.currency"
                " WHERE l.entry_id IN :ids ORDER BY l.entry_id, l.line_no"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": ids[start : start + 500]},
        )
        for r in rows:
            lines[r.entry_id].append(JournalLine(line_no=int(r.line_no), account=r.account_code, account_name=r.name,
                                                 currency=r.currency, side=r.side, amount_minor=int(r.amount_minor),
                                                 amount=from_minor(int(r.amount_minor), r.currency)))  # fmt: skip
    return [
        JournalEntry(entry_id=e.entry_id, event_id=e.event_id, payment_id=e.payment_id, kind=e.kind,
                     description=e.description, legacy=bool(e.legacy),
                     occurred_at=datetime.fromisoformat(e.occurred_at), posted_at=datetime.fromisoformat(e.posted_at),
                     lines=lines[e.entry_id], corrects=e.corrects)
        for e in entries
    ]


#: the entries of one payment (``:pid``), written so that each kind is read through its partial index
#: (ux_journal_payment_entry, ix_journal_corrections_payment: ledger migration 4); kind is one of the two (CHECK)
PAYMENT_ENTRIES: Final = ("((e.kind = 'payment' AND e.payment_id = :pid)"
                          " OR (e.kind = 'correction' AND e.payment_id = :pid))")


def journal(settings: Settings, *, payment_id: str | None = None, limit: int = 100, newest_first: bool = False,
            starting_after: str | None = None) -> list[JournalEntry]:
    """Journal entries with their lines, oldest first (``newest_first``: newest first), optionally those of one
    payment; ``starting_after``: the entries after that entry id in this order (keyset paging)."""
    with store.engine(settings).connect() as conn:
        where, args = ["1 = 1"], {}
        if payment_id is not None:
            where.append(PAYMENT_ENTRIES)
            args["pid"] = payment_id
        if starting_after is not None:
            clause, more = after_clause(conn, "journal_entries", "posted_at", "entry_id", descending=newest_first,
                                        starting_after=starting_after, alias="e")
            where.append(clause)
            args.update(more)
        return _load_entries(conn, " AND ".join(where), args, limit, newest_first=newest_first)


class AccountBalance(msgspec.Struct, kw_only=True, frozen=True):
    account: str
    name: str
    kind: str
    debits_minor: int
    credits_minor: int
    #: debits - credits (an asset's natural balance is a debit)
    balance_minor: int
    balance: Decimal


class CurrencyBalance(msgspec.Struct, kw_only=True, frozen=True):
    currency: str
    accounts: list[AccountBalance]
    total_debits_minor: int
    total_credits_minor: int
    total_debits: Decimal
    total_credits: Decimal
    balanced: bool


class TrialBalance(msgspec.Struct, kw_only=True, frozen=True):
    currencies: list[CurrencyBalance]
    balanced: bool
    entries: int


def balances(settings: Settings) -> TrialBalance:
    """The trial balance per currency: each account's debits and credits, and debits = credits."""
    with store.engine(settings).connect() as conn:
        return trial_balance(conn)


_DEBITS: Final = exact_sum("CASE WHEN l.side = 'D' THEN l.amount_minor END", "debits")
_CREDITS: Final = exact_sum("CASE WHEN l.side = 'C' THEN l.amount_minor END", "credits")


def trial_balance(conn: Connection) -> TrialBalance:
    # exact beyond 64 bits on both databases (store.sums): a balance is the sum of many amounts. The lines are
    # summed per account in one pass, then joined to the accounts (no index by account is kept: ledger migration 4)
    rows = conn.exec_driver_sql(
        "SELECT a.currency, a.code, a.name, a.kind, s.debits_hi, s.debits_lo, s.credits_hi, s.credits_lo"
        " FROM ledger_accounts a LEFT JOIN"
        f" (SELECT l.account_code, l.currency, {_DEBITS}, {_CREDITS} FROM journal_lines l"
        "  GROUP BY l.account_code, l.currency) s ON s.account_code = a.code AND s.currency = a.currency"
        " ORDER BY a.currency, a.code"
    ).all()
    per: dict[str, list[AccountBalance]] = defaultdict(list)
    for r in rows:
        dr, cr = combine(r.debits_hi, r.debits_lo), combine(r.credits_hi, r.credits_lo)
        per[r.currency].append(AccountBalance(account=r.code, name=r.name, kind=r.kind, debits_minor=dr,
                                              credits_minor=cr, balance_minor=dr - cr,
                                              balance=from_minor(dr - cr, r.currency)))  # fmt: skip
    out = []
    for cur, accounts in sorted(per.items()):
        dr = sum(a.debits_minor for a in accounts)
        cr = sum(a.credits_minor for a in accounts)
        out.append(CurrencyBalance(currency=cur, accounts=accounts, total_debits_minor=dr, total_credits_minor=cr,
                                   total_debits=from_minor(dr, cur), total_credits=from_minor(cr, cur),
                                   balanced=dr == cr))  # fmt: skip
    n = int(conn.exec_driver_sql("SELECT COUNT(*) FROM journal_entries").scalar_one())
    return TrialBalance(currencies=out, balanced=all(c.balanced for c in out), entries=n)


class Violation(msgspec.Struct, kw_only=True, frozen=True):
    rule: str
    detail: str
    entry_id: str | None = None


class VerifyReport(msgspec.Struct, kw_only=True, frozen=True):
    ok: bool
    entries: int
    lines: int
    violations: list[Violation]


_CHECKS: Final[list[tuple[str, str]]] = [
    ("balanced-per-currency",
     "SELECT entry_id, currency, SUM(CASE side WHEN 'D' THEN amount_minor ELSE -amount_minor END) AS net"
     " FROM journal_lines GROUP BY entry_id, currency"
     " HAVING SUM(CASE side WHEN 'D' THEN amount_minor ELSE -amount_minor END) <> 0"),
    ("positive-amount",
     "SELECT entry_id, line_no, amount_minor FROM journal_lines WHERE amount_minor IS NULL OR amount_minor <= 0"),
    ("side", "SELECT entry_id, line_no, side FROM journal_lines WHERE side NOT IN ('D', 'C') OR side IS NULL"),
    ("line-count",
     "SELECT e.entry_id, e.line_count, COUNT(l.line_no) AS n FROM journal_entries e"
     " LEFT JOIN journal_lines l ON l.entry_id = e.entry_id GROUP BY e.entry_id, e.line_count"
     " HAVING COUNT(l.line_no) <> e.line_count OR COUNT(l.line_no) < 2"),
    ("orphan-line",
     "SELECT l.entry_id, l.line_no FROM journal_lines l LEFT JOIN journal_entries e ON e.entry_id = l.entry_id"
     " WHERE e.entry_id IS NULL"),
    ("account-currency",
     "SELECT l.entry_id, l.line_no, l.account_code, l.currency FROM journal_lines l LEFT JOIN ledger_accounts a"
     " ON a.code = l.account_code AND a.currency = l.currency WHERE a.code IS NULL"),
    ("one-entry-per-event",
     "SELECT event_id, COUNT(*) FROM journal_entries GROUP BY event_id HAVING COUNT(*) > 1"),
    ("one-payment-entry-per-payment",
     "SELECT payment_id, COUNT(*) FROM journal_entries WHERE kind = 'payment' GROUP BY payment_id"
     " HAVING COUNT(*) > 1"),
]  # fmt: skip


def verify(settings: Settings) -> VerifyReport:
    """Re-check every invariant over the whole journal (and that the database guards are in place)."""
    with store.engine(settings).connect() as conn:
        return verify_conn(conn)


def verify_conn(conn: Connection) -> VerifyReport:
    violations: list[Violation] = []
    for rule, sql in _CHECKS:
        try:
            with conn.begin_nested():  # a check that cannot run (data written around the guards) is a finding
                rows = conn.exec_driver_sql(sql).all()
        except sa.exc.DBAPIError as exc:
            violations.append(Violation(rule=rule, detail=f"the check could not run: {exc.orig}"))
            continue
        for row in rows:
            values = tuple(row)
            violations.append(Violation(rule=rule, entry_id=str(values[0]), detail=", ".join(map(str, values))))
    for key, stored in dialect(conn).non_integers(conn, "journal_lines", "entry_id || ':' || line_no", "amount_minor"):
        entry_id, line_no = str(key).rsplit(":", 1)
        violations.append(Violation(rule="integer-minor-units", entry_id=entry_id,
                                    detail=f"line {line_no} amount stored as {stored}"))
    for row in conn.exec_driver_sql("SELECT DISTINCT currency FROM journal_lines"):
        try:
            exponent(row[0])
        except ContractError as exc:
            violations.append(Violation(rule="currency", detail=str(exc)))
    tb = trial_balance(conn)
    for c in tb.currencies:
        if not c.balanced:
            violations.append(Violation(rule="trial-balance", detail=f"{c.currency}: debits {c.total_debits_minor}"
                                        f" != credits {c.total_credits_minor} (minor units)"))  # fmt: skip
    missing = store.guard_triggers(conn) - store.trigger_names(conn)
    for name in sorted(missing):
        violations.append(Violation(rule="database-guard", detail=f"trigger {name} is missing"))
    n_lines = int(conn.exec_driver_sql("SELECT COUNT(*) FROM journal_lines").scalar_one())
    return VerifyReport(ok=not violations, entries=tb.entries, lines=n_lines, violations=violations)
