"""``payevents lag``: how far each service's consumer group is behind the channel (and ``--wait`` for zero);
``payevents lost``: what the channel deleted before a service read it."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from payevents.faces.options import (
    MAX_WAIT_S,
    BrokerOpt,
    Common,
    DatabaseUrlOpt,
    DataDirOpt,
    EnvOpt,
    common,
    echo_json,
    load_settings,
    print_table,
)
from payevents.settings import Settings


def group_lag(settings: Settings, services: list[str]) -> dict[str, tuple[int, int]]:
    """Per service: records on ``payments.{env}.events`` that its group has not committed past yet (a group that
    never committed: every record), and records its consumers reported deleted before they read them; each service
    an installed name or ``package.module:service``."""
    from payevents.faces.web.data import lag_per_service

    return {g.service: (g.end if g.lag is None else g.lag, g.lost) for g in lag_per_service(settings, services)}


def lost_cmd(
    services: Annotated[list[str] | None, typer.Argument(help="services (default: every installed one)")] = None,
    *, o: Common,
) -> None:
    """Records the channel deleted (its retention) before a service read them, as each service's consumers
    reported them, with the command that publishes them again from the payments outbox and how many of the
    outbox's events in each range it has published again since."""
    from payevents.faces.web.data import lost_ranges_of, published_again_of
    from payevents.runtime.registry import registered_services, resolve_service

    settings = o.settings()
    rows = []
    for name in services or list(registered_services()):
        service = resolve_service(name)
        rows += [(service.name, r, published_again_of(settings, r)) for r in lost_ranges_of(settings, service)]
    if o.json:
        echo_json([{"service": name, **r.to_dict(),
                    "publishedAgain": None if again is None else {"outboxEvents": again[0], "published": again[1]}}
                   for name, r, again in rows])
        return

    def said(again: tuple[int, int] | None) -> str:
        if again is None:
            return "no outbox here"
        return "none of them the outbox's" if again[0] == 0 else f"{again[1]} of {again[0]}"

    print_table(f"records lost before they were read ({sum(r.records for _, r, _a in rows)})",
                ["service", "partition", "offsets", "records", "reported at", "publish them again", "published again"],
                ([name, str(r.gap.partition), f"{r.gap.first}-{r.gap.upto - 1}", str(r.records), r.reported_at,
                  r.republish, said(again)]
                 for name, r, again in rows), overflow="fold")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("lost")(common(output="json")(lost_cmd))

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
            found = group_lag(settings, names)
            lags = {name: behind for name, (behind, _lost) in found.items()}
            if not wait or all(v == 0 for v in lags.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if output == "json":
            typer.echo(json.dumps(lags))
        else:
            for name, (behind, lost) in found.items():
                typer.echo(f"{name:<14} {behind:>8,} behind" + (f"  ({lost:,} lost before read: payevents lost)"
                                                                 if lost else ""))
        if wait and any(lags.values()):
            raise typer.Exit(1)
