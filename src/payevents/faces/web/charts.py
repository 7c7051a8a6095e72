"""Charts for the dashboard, as SVG drawn here: the publish-delay histogram and the revenue chart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from html import escape
from typing import Any


def _label(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def delay_histogram_svg(
    histogram: Sequence[tuple[float | None, int]], sla_seconds: float, width: int = 760, height: int = 260
) -> str:
    """Bars per delay bucket (equal widths, bounds labelled) and a red line at the SLA bucket boundary."""
    left, right, top, bottom = 46, 12, 18, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(histogram)
    bar_w = plot_w / max(n, 1)
    peak = max((c for _, c in histogram), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="Publish delay histogram" id="delay-histogram" class="chart">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfe" stroke="#e3e7ee"/>',
    ]
    for frac in (0.5, 1.0):
        y = top + plot_h - frac * plot_h
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef0f4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{round(peak * frac)}</text>')
    sla_x: float | None = None
    for i, (le, count) in enumerate(histogram):
        x = left + i * bar_w
        h = (count / peak) * plot_h
        label = f"≤ {_label(le)}" if le is not None else "more"
        late = le is None or le > sla_seconds
        parts.append(
            f'<rect class="bar{" late" if late else ""}" data-le="{le if le is not None else "inf"}" '
            f'data-count="{count}" x="{x + 1.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 3, 1):.1f}" '
            f'height="{h:.1f}" fill="{"#d92d20" if late else "#2457c5"}"><title>{escape(label)}: {count}</title></rect>'
        )
        if i % 2 == 0 or le is None:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="end" class="axis" '
                f'transform="rotate(-40 {x + bar_w / 2:.1f} {top + plot_h + 14})">{escape(_label(le) if le else ">")}'
                "</text>"
            )
        if le is not None and sla_x is None and le >= sla_seconds:
            sla_x = x + bar_w
    if sla_x is None:
        sla_x = left + plot_w
    parts.append(
        f'<line id="sla-line" x1="{sla_x:.1f}" x2="{sla_x:.1f}" y1="{top - 6}" y2="{top + plot_h}" '
        'stroke="#d92d20" stroke-width="2" stroke-dasharray="6 4"/>'
    )
    parts.append(
        f'<text x="{sla_x - 4:.1f}" y="{top + 8}" text-anchor="end" class="sla-label" fill="#d92d20">'
        f"{sla_seconds:g} s rule</text>"
    )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" class="axis">'
        "publish delay (outbox commit → broker ack), events per bucket</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def periods(first: date, last: date, by: str) -> list[str]:
    """Every period of the window, oldest first: days (YYYY-MM-DD) or months (YYYY-MM)."""
    if by == "month":
        out, y, m = [], first.year, first.month
        while (y, m) <= (last.year, last.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _period_label(period: str) -> str:
    if len(period) == 7:
        d = date.fromisoformat(period + "-01")
        return f"{d.strftime('%b')} {d.year}"
    d = date.fromisoformat(period)
    return f"{d.strftime('%b')} {d.day}"


def revenue_svg(rows: Sequence[Any], first: date, last: date, by: str = "day", width: int = 900) -> str:
    """Revenue per period, one panel per currency (amounts of different currencies never share an axis).

    The x axis is time: every period of the window has its slot, in order, labelled with its date; a period
    without revenue is drawn as such (a grey mark on the baseline, titled "no revenue"), never left out. The
    y axis of each panel is in major units of its currency, from 0."""
    from payevents.services.payments.money import from_minor

    slots = periods(first, last, by)
    by_currency: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_currency.setdefault(r.currency, {})[r.period] = r
    currencies = sorted(by_currency)
    left, right, top, panel_h, gap, axis_h = 86, 16, 30, 120, 34, 22
    plot_w = width - left - right
    height = top + max(len(currencies), 1) * (panel_h + gap + axis_h)
    slot_w = plot_w / max(len(slots), 1)
    every = max(1, -(-len(slots) // 12))  # at most about 12 date labels
    unit = "day" if by == "day" else "month"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Revenue per {unit} and currency" id="revenue-svg" class="chart" '
        'font-family="system-ui, sans-serif">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#101828">Revenue per {unit}, '
        f"{escape(_period_label(slots[0]))} – {escape(_period_label(slots[-1]))} (UTC), per currency</text>",
    ]
    if not currencies:
        parts.append(f'<text x="{left}" y="{top + 40}" font-size="12" fill="#667085">No revenue in this window.</text>')
    for n, cur in enumerate(currencies):
        y0 = top + n * (panel_h + gap + axis_h) + 14
        base = y0 + panel_h
        found = by_currency[cur]
        peak = max((r.amount_minor for r in found.values()), default=0) or 1
        parts.append(f'<g class="panel" data-currency="{escape(cur)}">')
        parts.append(f'<text x="{left}" y="{y0 - 4}" font-size="12" font-weight="600" fill="#344054">'
                     f"{escape(cur)}</text>")
        parts.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="#fbfcfe" '
                     'stroke="#e3e7ee"/>')
        for frac in (0.0, 0.5, 1.0):
            y = base - frac * panel_h
            value = from_minor(round(peak * frac), cur) if frac else 0
            parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef0f4"/>')
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#667085" '
                         f'class="axis-value">{escape(str(value))} {escape(cur)}</text>')
        for i, period in enumerate(slots):
            x = left + i * slot_w
            r = found.get(period)
            amount = r.amount if r is not None and r.payments else "0"
            attrs = f'data-day="{period}" data-amount="{escape(str(amount))}"'
            if r is not None and r.payments:
                h = max(r.amount_minor / peak * panel_h, 1.0)
                parts.append(f'<rect class="bar" {attrs} x="{x + slot_w * 0.15:.1f}" y="{base - h:.1f}" '
                             f'width="{max(slot_w * 0.7, 1):.1f}" height="{h:.1f}" fill="#2457c5">'
                             f"<title>{escape(_period_label(period))}: {escape(str(amount))} {escape(cur)}, "
                             f"{r.payments} payments</title></rect>")
            else:
                parts.append(f'<g class="slot" {attrs}><rect class="no-revenue" x="{x + slot_w * 0.15:.1f}" '
                             f'y="{base - 2:.1f}" width="{max(slot_w * 0.7, 1):.1f}" height="2" fill="#98a2b3">'
                             f"<title>{escape(_period_label(period))}: no revenue</title></rect></g>")
        parts.append('<g class="axis-time" font-size="10" fill="#667085">')
        for i, period in enumerate(slots):
            if i % every == 0 or i == len(slots) - 1:
                x = left + (i + 0.5) * slot_w
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#98a2b3"/>')
                parts.append(f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">'
                             f"{escape(_period_label(period))}</text>")
        parts.append("</g>")
        parts.append(f"</g>\n<!-- end {escape(cur)} -->")
    parts.append("</svg>")
    return "\n".join(parts)
