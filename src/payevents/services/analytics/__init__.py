"""Analytics — "updates payment metrics and revenue reports".

Public functions take the settings first and return plain values the CLI and the HTTP API serialize.
"""

from __future__ import annotations

from payevents.services.analytics.queries import RevenueRow, metrics, report
from payevents.services.analytics.render import render_chart, to_csv, to_json

__all__ = ["RevenueRow", "metrics", "render_chart", "report", "to_csv", "to_json"]
