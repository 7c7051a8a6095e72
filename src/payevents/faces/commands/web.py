"""``payevents serve``: the HTTP API, the dashboard and the catalog on one port. (``payevents demo`` lives
in :mod:`payevents.faces.commands.demo`.)"""

from __future__ import annotations

from typing import Annotated

import typer

from payevents.faces.options import Common, common


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @common(broker=True)
    def serve(
        host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port")] = 8000,
        *, o: Common,
    ) -> None:
        """Serve the JSON API, the dashboard and the event catalog (writes need PAYEVENTS_API_TOKEN)."""
        import uvicorn

        from payevents.faces.web import create_app
        from payevents.runtime import tracing

        settings = o.settings()
        tracing.configure("api")  # OTEL_*: the API's payment commands start their payments' traces
        web_app = create_app(settings)
        typer.echo(f"payevents dashboard on http://{host}:{port}/ (API docs /docs, catalog /catalog/)")
        uvicorn.run(web_app, host=host, port=port, log_level="info")
