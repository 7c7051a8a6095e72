"""The contracts benchmark: events/s per core for decode+validate and validate+encode of PaymentProcessed.

Single process, single thread; rates are computed from the process's CPU time (so "per core" holds on a
busy machine) and the wall time is reported next to them. Best of ``repeat`` runs after a warm-up.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from payevents.contracts import decode_event, encode_event, example_event
from payevents.contracts.codec import EventValidationError
from payevents.contracts.events import PaymentProcessed

#: the issue's target for decode+validate of PaymentProcessed, events/s per core
TARGET_DECODE_PER_S: Final = 100_000
#: (currency, decimals) mix of the generated events
_MIX: Final = (("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("GBP", 2), ("CLF", 4))


@dataclasses.dataclass(frozen=True, slots=True)
class ContractsFigure:
    """One measured operation: ``per_s`` = n / CPU seconds of the best run."""

    name: str
    n: int
    cpu_s: float
    wall_s: float
    note: str

    @property
    def per_s(self) -> float:
        return self.n / self.cpu_s if self.cpu_s > 0 else float("inf")

    @property
    def per_s_wall(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else float("inf")


def make_processed(n: int, seed: str = "bench") -> list[PaymentProcessed]:
    """N distinct PaymentProcessed events (fresh ids, a currency mix, every third without an invoice)."""
    base = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        code, digits = _MIX[i % len(_MIX)]
        amount = Decimal(1000 + (i * 7919) % 500_000).scaleb(-digits)
        ev = example_event(
            "PaymentProcessed",
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}:{i}")),
            payment_id=f"pay_{seed}_{i:08d}",
            amount=amount,
            currency=code,
            at=base + timedelta(milliseconds=i),
        )
        assert isinstance(ev, PaymentProcessed)
        if i % 3 == 0:
            import msgspec

            ev = msgspec.structs.replace(ev, data=msgspec.structs.replace(ev.data, invoiceId=msgspec.UNSET))
        out.append(ev)
    return out


def make_legacy(n: int) -> list[bytes]:
    """N channel-page sample envelopes (json.dumps, naive timestamps), distinct idempotency keys."""
    import json

    now = datetime(2024, 11, 11, 9, 15, 30)  # noqa: DTZ001 - the legacy producer's naive utcnow()
    out = []
    for i in range(n):
        doc = {
            "eventType": "PAYMENT_PROCESSED",
            "timestamp": (now + timedelta(milliseconds=i)).isoformat(),
            "version": "1.0",
            "payload": {
                "paymentId": f"PAY-{i}",
                "orderId": f"ORD-{i}",
                "amount": {"value": 99.99, "currency": "USD"},
                "status": "SUCCESS",
                "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "network": "VISA"},
                "transactionDetails": {"processorId": f"stripe_{i}", "authorizationCode": "AUTH123"},
            },
            "metadata": {"merchantId": "MERCH-456", "idempotencyKey": f"PAY-{i}-2024-11-11-99.99"},
        }
        out.append(json.dumps(doc).encode())
    return out


def _invalid(raws: Sequence[bytes]) -> list[bytes]:
    """Copies with a lower-case currency: every one takes the precise path."""
    return [r.replace(b'"currency":"', b'"currency":"x', 1) for r in raws]


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm-up (caches, schema validators)
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        c1, w1 = time.process_time(), time.perf_counter()
        if c1 - c0 < best_cpu:
            best_cpu, best_wall = c1 - c0, w1 - w0
    return best_cpu, best_wall


def run_contracts(n: int = 50_000, repeat: int = 3) -> list[ContractsFigure]:
    """Measure decode+validate, validate+encode, legacy decode+upcast and rejection (precise path)."""
    if n < 1:
        raise ValueError(f"--n: {n} must be a positive integer")
    events = make_processed(n)
    raws = [encode_event(e) for e in events]
    legacy_raws = make_legacy(max(1, n // 5))
    bad = _invalid(raws[: max(1, n // 50)])

    def decode_all() -> None:
        for r in raws:
            decode_event(r)

    def encode_all() -> None:
        for e in events:
            encode_event(e)

    def legacy_all() -> None:
        for r in legacy_raws:
            decode_event(r)

    def reject_all() -> None:
        for r in bad:
            try:
                decode_event(r)
            except EventValidationError:
                pass
            else:
                raise AssertionError("an invalid event was accepted")

    figures = []
    for name, fn, count, note in (
        ("decode+validate", decode_all, len(raws), "PaymentProcessed bytes -> DecodedEvent (fast path)"),
        ("validate+encode", encode_all, len(events), "PaymentProcessed -> bytes (strict emit rules)"),
        ("legacy decode+upcast", legacy_all, len(legacy_raws), "PAYMENT_PROCESSED 1.0 -> PaymentProcessed"),
        ("reject invalid", reject_all, len(bad), "errors with paths (JSON Schema precise path)"),
    ):
        cpu, wall = _time(fn, repeat)
        figures.append(ContractsFigure(name=name, n=count, cpu_s=cpu, wall_s=wall, note=note))
    return figures


def format_figures(figures: Sequence[ContractsFigure]) -> list[str]:
    """Aligned lines for the terminal."""
    lines = []
    for f in figures:
        line = f"{f.name:<22} {f.per_s:>12,.0f} events/s per core   ({f.per_s_wall:,.0f}/s wall, n={f.n:,})  {f.note}"
        if f.name == "decode+validate":
            met = "met" if f.per_s >= TARGET_DECODE_PER_S else "NOT met"
            line += f"  [target >= {TARGET_DECODE_PER_S:,}: {met}]"
        lines.append(line)
    return lines


__all__ = ["TARGET_DECODE_PER_S", "ContractsFigure", "format_figures", "make_legacy", "make_processed", "run_contracts"]
