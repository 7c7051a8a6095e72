"""Charts for the dashboard: the publish-delay histogram as inline SVG, the revenue chart via analytics."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Sequence
from html import escape
from pathlib import Path
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


class RevenueChart:
    """The analytics service's revenue chart (matplotlib) rendered to SVG, cached per report content."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: tuple[str, bytes] | None = None

    def svg(self, rows: Sequence[Any], title: str) -> bytes:
        from payevents.services import analytics

        key = hashlib.sha256(repr([r.as_dict() for r in rows]).encode() + title.encode()).hexdigest()
        with self._lock:  # matplotlib's pyplot is not thread-safe
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
            with tempfile.TemporaryDirectory(prefix="payevents-chart-") as tmp:
                path = analytics.render_chart(rows, Path(tmp) / "revenue.svg", title=title)
                data = Path(path).read_bytes()
            self._cache = (key, data)
            return data
