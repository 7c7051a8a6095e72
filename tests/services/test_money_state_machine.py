"""A stateful property test of the money services (Hypothesis RuleBasedStateMachine).

Random payments — partial, full and overpayments, payments for invoices created later, currency
mismatches, payments without invoice, legacy events — across JPY, USD, KWD and CLF, delivered to
the Ledger's and the Invoices' handlers (one store transaction per step, on SQLite), with duplicate
deliveries and replays of earlier events. After every step: the ledger balances per currency and
holds exactly the unique payments; every invoice's paid amount equals the sum of its applied
payments and the model's; no status is wrong; credits and unapplied payments match the model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule
from money_helpers import deliver, processed

from payevents.contracts.codec import DecodedEvent
from payevents.services import invoices, ledger
from payevents.services.invoices import store as invoice_store
from payevents.services.payments.money import from_minor
from payevents.settings import Settings
from payevents.store.db import dispose_engines

CURRENCIES = ("JPY", "USD", "KWD", "CLF")
minor_amounts = st.integers(min_value=1, max_value=5_000_000)


@dataclass
class ModelInvoice:
    currency: str
    due: int
    customer: str
    paid: int = 0

    @property
    def status(self) -> str:
        return "Open" if self.paid == 0 else ("Paid" if self.paid == self.due else "Partially Paid")


@dataclass
class Model:
    invoices: dict[str, ModelInvoice] = field(default_factory=dict)
    #: invoice id -> [(currency, amount)] waiting for the invoice
    waiting: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    held: int = 0
    credits: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    ledger: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    entries: int = 0

    def apply(self, invoice_id: str, currency: str, amount: int) -> None:
        inv = self.invoices[invoice_id]
        if currency != inv.currency:
            self.held += 1
            return
        applied = min(amount, inv.due - inv.paid)
        inv.paid += applied
        if amount - applied:
            self.credits[(inv.customer, currency)] += amount - applied


class MoneyServices(RuleBasedStateMachine):
    invoice_ids = Bundle("invoice_ids")
    events = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="money-sm-"))
        self.settings = Settings(env="dev", data_dir=self.tmp)  # type: ignore[arg-type]
        self.model = Model()
        self.n = 0

    def teardown(self) -> None:
        dispose_engines()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _deliver(self, batch: list[DecodedEvent]) -> None:
        deliver(self.settings, "ledger", batch)
        deliver(self.settings, "invoices", batch)

    def _pay(self, amount: int, currency: str, invoice_id: str | None, dup: bool, legacy: bool = False) -> DecodedEvent:
        self.n += 1
        e = processed(amount=from_minor(amount, currency), currency=currency, invoice_id=invoice_id,
                      payment_id=f"pay_{self.n}", legacy=legacy)  # fmt: skip
        self._deliver([e, e] if dup else [e])
        self.model.ledger[currency] += amount
        self.model.entries += 1
        return e

    @initialize()
    def start(self) -> None:
        invoices.list_invoices(self.settings)  # migrate
        ledger.journal(self.settings)

    @rule(target=invoice_ids, currency=st.sampled_from(CURRENCIES), due=minor_amounts,
          customer=st.sampled_from(["cus_a", "cus_b"]))  # fmt: skip
    def create_invoice(self, currency: str, due: int, customer: str) -> str:
        self.n += 1
        invoice_id = f"INV-{self.n}"
        self._create(invoice_id, currency, due, customer)
        return invoice_id

    def _create(self, invoice_id: str, currency: str, due: int, customer: str) -> None:
        invoices.create(self.settings, invoice_id=invoice_id, customer_id=customer, currency=currency,
                        amount_due=from_minor(due, currency), due_date="2026-01-31")  # fmt: skip
        self.model.invoices[invoice_id] = ModelInvoice(currency=currency, due=due, customer=customer)
        for cur, amount in self.model.waiting.pop(invoice_id, []):
            self.model.apply(invoice_id, cur, amount)

    @rule(target=events, invoice_id=invoice_ids, kind=st.sampled_from(["third", "rest", "over", "random"]),
          extra=minor_amounts, dup=st.booleans())  # fmt: skip
    def pay_invoice(self, invoice_id: str, kind: str, extra: int, dup: bool) -> DecodedEvent:
        inv = self.model.invoices[invoice_id]
        remaining = inv.due - inv.paid
        amount = {"third": max(1, remaining // 3), "rest": max(1, remaining), "over": remaining + extra,
                  "random": extra}[kind]  # fmt: skip
        e = self._pay(amount, inv.currency, invoice_id, dup)
        self.model.apply(invoice_id, inv.currency, amount)
        return e

    @rule(target=events, invoice_id=invoice_ids, currency=st.sampled_from(CURRENCIES), amount=minor_amounts)
    def pay_in_another_currency(self, invoice_id: str, currency: str, amount: int) -> DecodedEvent:
        e = self._pay(amount, currency, invoice_id, dup=False)
        self.model.apply(invoice_id, currency, amount)
        return e

    @rule(target=events, future=st.integers(min_value=1, max_value=3), currency=st.sampled_from(CURRENCIES),
          amount=minor_amounts, dup=st.booleans())  # fmt: skip
    def pay_unknown_invoice(self, future: int, currency: str, amount: int, dup: bool) -> DecodedEvent:
        invoice_id = f"INV-FUTURE-{future}"
        if invoice_id in self.model.invoices:
            e = self._pay(amount, currency, invoice_id, dup)
            self.model.apply(invoice_id, currency, amount)
            return e
        e = self._pay(amount, currency, invoice_id, dup)
        self.model.waiting[invoice_id].append((currency, amount))
        return e

    @precondition(lambda self: bool(self.model.waiting))
    @rule(data=st.data(), due=minor_amounts, same_currency=st.booleans())
    def create_awaited_invoice(self, data: st.DataObject, due: int, same_currency: bool) -> None:
        invoice_id = data.draw(st.sampled_from(sorted(self.model.waiting)))
        first_currency = self.model.waiting[invoice_id][0][0]
        currency = first_currency if same_currency else data.draw(st.sampled_from(CURRENCIES))
        self._create(invoice_id, currency, due, "cus_a")

    @rule(target=events, currency=st.sampled_from(CURRENCIES), amount=minor_amounts, legacy=st.booleans())
    def pay_without_invoice(self, currency: str, amount: int, legacy: bool) -> DecodedEvent:
        return self._pay(amount, currency, None, dup=False, legacy=legacy)

    @rule(event=events, twice=st.booleans())
    def replay(self, event: DecodedEvent, twice: bool) -> None:
        self._deliver([event, event] if twice else [event])

    # -- invariants ------------------------------------------------------------------------------------

    @invariant()
    def ledger_balances_per_currency_and_holds_each_payment_once(self) -> None:
        tb = ledger.balances(self.settings)
        assert tb.balanced and tb.entries == self.model.entries
        for c in tb.currencies:
            assert c.total_debits_minor == c.total_credits_minor == self.model.ledger[c.currency]
            cash = next(a for a in c.accounts if a.account == "cash")
            assert cash.balance_minor == self.model.ledger[c.currency]
        assert {c.currency for c in tb.currencies} == {k for k, v in self.model.ledger.items() if v}
        report = ledger.verify(self.settings)
        assert report.ok, report.violations

    @invariant()
    def invoices_paid_equals_applied_and_status_is_right(self) -> None:
        assert invoices.check(self.settings) == []
        got = {i.invoice_id: i for i in invoices.list_invoices(self.settings, limit=10_000)}
        assert set(got) == set(self.model.invoices)
        for invoice_id, m in self.model.invoices.items():
            inv = got[invoice_id]
            assert (inv.paid_minor, inv.status) == (m.paid, m.status), invoice_id
            assert 0 <= inv.balance_due_minor == m.due - m.paid
        with invoice_store.engine(self.settings).connect() as conn:
            applied = dict(conn.execute(sa.text(
                "SELECT invoice_id, SUM(applied_minor) FROM invoice_payments WHERE status = 'applied'"
                " GROUP BY invoice_id")).all())  # fmt: skip
        for invoice_id, m in self.model.invoices.items():
            assert int(applied.get(invoice_id, 0)) == m.paid

    @invariant()
    def credits_and_unapplied_match(self) -> None:
        got = {(c.customer_id, c.currency): c.amount_minor for c in invoices.credits(self.settings)}
        assert got == {k: v for k, v in self.model.credits.items() if v}
        pending = invoices.unapplied(self.settings)
        assert sum(p.status == "unapplied" for p in pending) == sum(len(v) for v in self.model.waiting.values())
        assert sum(p.status == "held" for p in pending) == self.model.held
        assert all(p.reason for p in pending)


MoneyServices.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)  # fmt: skip
test_money_services_state_machine = MoneyServices.TestCase
