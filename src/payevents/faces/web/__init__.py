"""The HTTP API and dashboard (FastAPI, server-rendered, every asset served locally)."""

from __future__ import annotations

from payevents.faces.web.app import create_app

__all__ = ["create_app"]
