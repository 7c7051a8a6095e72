"""Revenue report output: CSV, JSON and a chart image (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from payevents.services.analytics.queries import RevenueRow

CSV_COLUMNS = ("period", "currency", "payments", "amount_minor", "amount", "failed")


def to_csv(rows: Sequence[RevenueRow]) -> str:
    """The report as CSV with a header line (amounts exact: minor units and decimal string)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_dict())
    return out.getvalue()


def to_json(rows: Sequence[RevenueRow]) -> str:
    """The report as a JSON array of objects (amount as a decimal string, amount_minor as an integer)."""
    return json.dumps([row.as_dict() for row in rows], indent=2)


def _all_periods(present: list[str]) -> list[str]:
    """Every day (YYYY-MM-DD) or month (YYYY-MM) from the first to the last present one, so the
    x axis is a true calendar and days without payments show as zero."""
    if not present:
        return []
    if len(present[0]) == 7:
        y, m = map(int, present[0].split("-"))
        out = []
        while (label := f"{y:04d}-{m:02d}") <= present[-1]:
            out.append(label)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out
    d, last = date.fromisoformat(present[0]), date.fromisoformat(present[-1])
    return [(d + timedelta(days=i)).isoformat() for i in range((last - d).days + 1)]


def _axis_label(v: float, _pos: object) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == 0 else f"{v:,.2f}"


def render_chart(rows: Sequence[RevenueRow], path: str | Path, title: str | None = None) -> Path:
    """Draw revenue per period, one panel and series per currency (never summed across currencies).

    PNG unless ``path`` ends in ``.svg``. Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    periods = _all_periods(sorted({r.period for r in rows}))
    currencies = sorted({r.currency for r in rows if r.payments})
    by_key = {(r.period, r.currency): r for r in rows}
    if not title:
        span = f"{periods[0]} to {periods[-1]}" if periods else "no data"
        unit = "month" if periods and len(periods[0]) == 7 else "day"
        title = f"Revenue per {unit} and currency, {span}"

    panels = max(1, len(currencies))
    fig, axes = plt.subplots(panels, 1, figsize=(max(8.0, min(20.0, 0.45 * len(periods) + 4)), 2.8 * panels + 1),
                             sharex=True, squeeze=False)
    try:
        if not currencies:
            ax = axes[0][0]
            ax.text(0.5, 0.5, "no processed payments in this period", ha="center", va="center", fontsize=12)
            ax.set_axis_off()
        x = list(range(len(periods)))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, currency in enumerate(currencies):
            ax = axes[i][0]
            # Decimal -> float only to place bars on screen; totals stay exact in the table/CSV/JSON.
            values = [float(Decimal(by_key[(p, currency)].amount)) if (p, currency) in by_key else 0.0 for p in periods]
            color = colors[i % len(colors)]
            if len(periods) <= 45:
                ax.bar(x, values, color=color, label=currency)
            else:
                ax.plot(x, values, color=color, label=currency, linewidth=1.8, marker="o", markersize=2.5)
            ax.set_ylabel(f"revenue ({currency})")
            ax.yaxis.set_major_formatter(FuncFormatter(_axis_label))
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(currency, loc="left", fontsize=11, fontweight="bold")
            ax.margins(y=0.12)
            total = sum((Decimal(r.amount) for r in rows if r.currency == currency), Decimal(0))
            payments = sum(r.payments for r in rows if r.currency == currency)
            ax.set_title(f"{currency}: {total:,} total, {payments} payments", fontsize=10, loc="right")
        bottom = axes[-1][0]
        if periods:
            bottom.set_xticks(x)
            bottom.set_xticklabels(periods, rotation=45, ha="right", fontsize=8)
            step = max(1, math.ceil(len(periods) / 30))
            ticks = list(range(0, len(periods), step))
            bottom.set_xticks(ticks)
            bottom.set_xticklabels([periods[t] for t in ticks], rotation=45, ha="right", fontsize=8)
        fig.suptitle(title, fontsize=13)
        fig.tight_layout()
        fig.savefig(path, format="svg" if path.suffix.lower() == ".svg" else "png", dpi=110)
    finally:
        plt.close(fig)
    return path
