"""``payevents kafka up``: the pinned Apache Kafka on this machine, for trying payevents on Kafka."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    kafka = typer.Typer(name="kafka", help="A local Apache Kafka (the release the tests use).", no_args_is_help=True)

    @kafka.command("up")
    def up(
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="the first broker's client port")] = 9092,
        nodes: Annotated[int, typer.Option("--nodes", min=1, max=3, help="1, or 3 for a replicated cluster")] = 1,
        data_dir: Annotated[Path, typer.Option("--data-dir", help="kept between runs: topics and offsets survive "
                                                                   "a restart")] = Path("kafka-data"),
    ) -> None:
        """Start Apache Kafka in KRaft mode on 127.0.0.1 and keep it running until Ctrl-C (or SIGTERM), which
        stops it. The first run fetches the pinned release with Maven (tools/kafka/fetch.sh)."""
        from payevents.localkafka import LocalKafka

        cluster = LocalKafka(nodes, data_dir=data_dir, port=port)
        typer.echo(f"starting Apache Kafka ({nodes} node{'s' if nodes > 1 else ''}, data in {data_dir}) ...")
        try:
            cluster.start()
            typer.echo(f"Kafka is up: PAYEVENTS_BROKER={cluster.url}  (Ctrl-C stops it)")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(1.0):
                dead = [n.node_id for n in cluster.nodes if not n.alive]
                if dead:
                    typer.secho(f"kafka node(s) {dead} exited; see {data_dir}/node*/server.log", err=True,
                                fg=typer.colors.RED)
                    raise typer.Exit(1)
        finally:
            cluster.stop(keep_data=True)
            typer.echo("Kafka stopped")

    app.add_typer(kafka)
