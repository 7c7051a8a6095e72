"""``payevents lag``: how far each service's consumer group is behind the channel (and ``--wait`` for zero)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from payevents.faces.options import MAX_WAIT_S, BrokerOpt, DatabaseUrlOpt, DataDirOpt, EnvOpt, load_settings


def group_lag(settings: object, services: list[str]) -> dict[str, int]:
    """Records on ``payments.{env}.events`` that each service's group has not committed past yet (each an
    installed service's name or ``package.module:service``; any other is a ConfigError)."""
    from payevents.contracts.channel import topic_for
    from payevents.runtime.registry import resolve_service
    from payevents.settings import Settings
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    assert isinstance(settings, Settings)
    groups = {svc: resolve_service(svc).group for svc in services}
    topic = topic_for(settings.env)
    transport = open_transport(settings)
    try:
        transport.create_topics([topic], settings.partitions)
        ends = transport.describe(topic).end_offsets
        out: dict[str, int] = {}
        for svc, group in groups.items():
            committed = transport.group_offsets(group, topic)
            out[svc] = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
        return out
    finally:
        transport.close()


def register(app: typer.Typer) -> None:
    @app.command("lag")
    def lag(
        services: Annotated[list[str] | None, typer.Argument(help="services (default: every installed one)")] = None,
        wait: Annotated[float, typer.Option("--wait", min=0, max=MAX_WAIT_S,
                                            help="wait up to this many seconds until every lag is 0 "
                                                 "(exit 1 if it is not by then)")] = 0.0,
        output: Annotated[str, typer.Option("--output", help="table or json")] = "table",
        env: EnvOpt = None, broker: BrokerOpt = None, data_dir: DataDirOpt = None,
        database_url: DatabaseUrlOpt = None,
    ) -> None:
        """Records each service still has to apply (its group's committed offsets against the channel's end)."""
        from payevents.services import registered_services

        if output not in ("table", "json"):
            raise typer.BadParameter("--output must be table or json")
        settings = load_settings(env, broker, data_dir, database_url)
        names = services or list(registered_services())
        deadline = time.monotonic() + wait
        while True:
            lags = group_lag(settings, names)
            if not wait or all(v == 0 for v in lags.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if output == "json":
            typer.echo(json.dumps(lags))
        else:
            for name, value in lags.items():
                typer.echo(f"{name:<14} {value:>8,} behind")
        if wait and any(lags.values()):
            raise typer.Exit(1)
