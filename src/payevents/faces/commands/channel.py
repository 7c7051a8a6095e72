"""``payevents run | relay | topics | tail | dlq | audit | outbox``: operating the channel."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from payevents.contracts.channel import MAX_PARTITIONS
from payevents.faces.options import Common, common, echo_json, print_table
from payevents.runtime.limits import MAX_BATCH, MAX_INSTANCES, MAX_LIMIT, MAX_STORED
from payevents.settings import Settings

topics_app = typer.Typer(name="topics", help="Create or describe payments.{env}.events and its dead-letter topic.",
                         no_args_is_help=True)
dlq_app = typer.Typer(name="dlq", help="The dead-letter channel: list, show, replay after a fix.", no_args_is_help=True)
audit_app = typer.Typer(name="audit", help="Audit trail of the payments outbox.", no_args_is_help=True)
outbox_app = typer.Typer(name="outbox", help="The payments outbox: events set aside by the relay, deliberate re-sends, "
                                             "re-publishing what the channel lost.",
                         no_args_is_help=True)


def _transport(settings: Settings) -> Any:
    from payevents.transport import open_transport

    return open_transport(settings)


LogFormatOpt = Annotated[str | None, typer.Option("--log-format", help="json (JSON lines), text, or auto (text on "
                                                                     "a terminal, else JSON); PAYEVENTS_LOG_FORMAT")]


def _log_to_stderr(log_format: str | None = None) -> None:
    import os

    from payevents.runtime import logs

    if log_format is not None:
        logs.log_format(log_format)  # a bad value is an error now
        os.environ["PAYEVENTS_LOG_FORMAT"] = log_format  # the workers (spawned processes) read it too
    logs.configure(log_format)


# -- run / relay --------------------------------------------------------------------------------------


@common(broker=True)
def run_cmd(
    names: Annotated[list[str], typer.Argument(help="services to run (ledger invoices analytics notifications), "
                                                    "relay, or all (= relay + the four services)")],
    one: Annotated[bool, typer.Option("--one", help="run a single consumer in this process (no child processes)")]
    = False,
    instances: Annotated[int, typer.Option("--instances", min=1, max=MAX_INSTANCES,
                                           help="consumer processes per service (they share the group's "
                                                "partitions)")] = 1,
    relay: Annotated[bool | None, typer.Option("--relay/--no-relay", help="also run the outbox relay (default: only "
                                                                          "with all or when named)")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, max=MAX_BATCH,
                                           help="records per consumer batch")] = 500,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535,
        help="metrics/health port of the first worker, the next get the following ports; 0 = any free port,"
             " announced (PAYEVENTS_METRICS_PORT)")] = None,
    restart: Annotated[bool, typer.Option("--restart/--no-restart", help="restart a worker that dies (with "
                                          "backoff: PAYEVENTS_RESTART_BACKOFF seconds first, doubling)")] = True,
    log_format: LogFormatOpt = None,
    *, o: Common,
) -> None:
    """Run the long-lived workers: each service's consumer (and the relay) in its own process, supervised
    (a worker that dies is restarted with backoff); each serves /metrics, /livez and /readyz on the port it
    announces. SIGTERM/SIGINT stops them all after their current batch."""
    from payevents.runtime import runner

    settings = o.settings()
    _log_to_stderr(log_format)
    if one:
        if len(names) != 1 or names[0] in ("all", runner.RELAY):
            raise typer.BadParameter("--one runs exactly one consumer service", param_hint="NAMES")
        raise typer.Exit(runner.serve_worker(settings, names[0], max_batch=max_batch, port=metrics_port))
    workers = runner.expand(names, relay=relay)
    exits = runner.run_workers(settings, workers, instances=instances, max_batch=max_batch, restart=restart,
                               metrics_port=metrics_port)
    failed = [e for e in exits if e.exitcode != 0]
    if failed:
        typer.secho(f"{len(failed)} of {len(exits)} workers did not stop cleanly: "
                    + ", ".join(f"{e.name}[{e.instance}]={e.exitcode}" for e in failed), fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@common(broker=True)
def relay_cmd(log_format: LogFormatOpt = None, *, o: Common) -> None:
    """Publish the payments outbox to the channel until SIGTERM/SIGINT."""
    from payevents.runtime import runner

    settings = o.settings()
    _log_to_stderr(log_format)
    raise typer.Exit(runner.serve_worker(settings, runner.RELAY))


@common(output="json", database=False)
def workers_cmd(
    forget: Annotated[bool, typer.Option("--forget", help="remove the entries of workers that are not alive")]
    = False,
    *, o: Common,
) -> None:
    """The workers of `payevents run` as they report themselves: alive, ready, restarts, last batch, lag and
    the URL to scrape. Exit 1 when a registered worker is not alive."""
    from payevents.runtime.workers import forget_slot, read_registry

    settings = o.settings()
    views = read_registry(settings)
    if forget:
        for v in views:
            if not v.alive:
                forget_slot(settings, v.name, v.instance)
                typer.echo(f"forgot {v.label} ({v.state})")
        return
    if o.json:
        echo_json([v.to_dict() for v in views], ascii_only=True)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"workers ({settings.data_dir / 'workers'})")
        for col in ("worker", "pid", "state", "alive", "ready", "restarts", "last batch", "lag", "metrics"):
            table.add_column(col)
        now = time.time()
        for v in views:
            last = f"{now - v.last_batch_at:.0f} s ago" if v.last_batch_at else "-"
            restarts = str(v.restarts) + (f" (last: {v.last_restart})" if v.restarts and v.last_restart else "")
            table.add_row(v.label, str(v.pid or "-"), v.state + (f" ({v.detail})" if v.detail else ""),
                          "yes" if v.alive else "[red]NO[/]", "yes" if v.ready else "no", restarts, last,
                          "-" if v.lag is None else str(v.lag), v.metrics_url or "-")
        Console().print(table)
        if not views:
            typer.echo("no worker has run with this data dir (start them with: payevents run all)")
    if any(not v.alive for v in views):
        raise typer.Exit(1)


# -- topics --------------------------------------------------------------------------------------------


@topics_app.command("create")
@common(broker=True, database=False)
def topics_create(
    partitions: Annotated[int | None, typer.Option("--partitions", min=1, max=MAX_PARTITIONS,
                                                             help="partition count (default: "
                                                                               "PAYEVENTS_PARTITIONS, 6)")] = None,
    *, o: Common,
) -> None:
    """Create payments.{env}.events and payments.{env}.events.dlq (cleanup.policy=delete) if missing.
    An existing topic with another partition count is an error: it would break per-payment order."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for

    settings = o.settings(partitions=partitions)
    names = [topic_for(settings.env), dead_letter_topic_for(settings.env)]
    t = _transport(settings)
    try:
        t.create_topics(names, settings.partitions)
        for name in names:
            info = t.describe(name)
            typer.echo(f"{name}: {info.partitions} partitions")
    finally:
        t.close()


@topics_app.command("describe")
@common(output="json", broker=True, database=False)
def topics_describe(*, o: Common) -> None:
    """Partitions, start and end offsets (records stored = end - start), retention and configuration of the
    channel and its dead-letter topic; on the embedded log also the bytes its file holds."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for
    from payevents.errors import PayeventsError, TransientError

    settings = o.settings()
    t = _transport(settings)
    out: list[dict[str, Any]] = []
    try:
        for name in (topic_for(settings.env), dead_letter_topic_for(settings.env)):
            try:
                info = t.describe(name)
            except TransientError:
                raise  # the broker is unreachable: one line and a non-zero exit (faces.cli.main)
            except PayeventsError as exc:
                out.append({"topic": name, "error": str(exc)})
                continue
            out.append({"topic": info.name, "partitions": info.partitions,
                        "startOffsets": {str(k): info.start_offsets.get(k, 0) for k in sorted(info.end_offsets)},
                        "endOffsets": {str(k): v for k, v in sorted(info.end_offsets.items())},
                        # stored now (end - start): records removed by retention are not counted
                        "records": info.records, "storageBytes": info.storage_bytes, "config": dict(info.config)})
    finally:
        t.close()
    if o.json:
        echo_json(out, ascii_only=True)
        return
    print_table(f"channel topics ({settings.broker})",
                ["topic", "partitions", "offsets (start..end)", "records stored", "bytes", "config"],
                map(_topic_row, out))


def _topic_row(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["topic"], "-", row["error"], "", "", ""]
    spans = " ".join(f"{k}:{row['startOffsets'][k]}..{v}" for k, v in row["endOffsets"].items())
    cfg = ", ".join(f"{k}={v}" for k, v in row["config"].items() if k in ("cleanup.policy", "retention.ms"))
    size = "-" if row["storageBytes"] is None else f"{row['storageBytes']} (whole log file)"
    return [row["topic"], str(row["partitions"]), spans, str(row["records"]), size, cfg]


@topics_app.command("trim")
@common(database=False)
def topics_trim(*, o: Common) -> None:
    """Apply the embedded log's retention now (producers do it about once a minute): remove records older
    than PAYEVENTS_RETENTION_MS that every consumer group has committed past."""
    from payevents.errors import ConfigError

    settings = o.settings()
    if settings.is_kafka:
        raise ConfigError("topics trim: Kafka applies its own retention (topic config retention.ms)")
    t = _transport(settings)
    try:
        removed = t.enforce_retention()
    finally:
        t.close()
    for (topic, partition), n in sorted(removed.items()):
        typer.echo(f"{topic}[{partition}]: {n} records removed")
    typer.echo(f"{sum(removed.values())} records removed (retention.ms={settings.retention_ms})")


# -- tail ------------------------------------------------------------------------------------------------


def _describe_record(m: Any) -> dict[str, Any]:
    """eventType, version, eventId, amount and legacy marker of a channel record (never raises)."""
    from payevents.contracts import channel, codec

    out: dict[str, Any] = {
        "eventType": m.header(channel.H_EVENT_TYPE), "version": m.header(channel.H_VERSION),
        "eventId": m.header(channel.H_EVENT_ID), "amount": None, "legacy": False, "error": None,
    }
    try:
        decoded = codec.decode_event(m.value or b"")  # type: ignore[attr-defined]
    except Exception as exc:
        out["error"] = type(exc).__name__
        return out
    amount = getattr(decoded.event.data, "amount", None)
    out.update(eventType=decoded.event_type, version=decoded.version, eventId=decoded.event_id,
               amount=f"{amount.value} {amount.currency}" if amount is not None else None, legacy=decoded.legacy)
    return out


@common(output="json", broker=True, database=False)
def tail_cmd(
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the first record instead of "
                                                                          "the end")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=MAX_LIMIT,
                                              help="stop after this many records")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="keep waiting for new records")] = True,
    dlq: Annotated[bool, typer.Option("--dlq", help="tail the dead-letter channel instead")] = False,
    *, o: Common,
) -> None:
    """Live view of the channel: partition/offset, key, eventType, version, eventId, amount, legacy marker."""
    as_json = o.json
    from rich.console import Console
    from rich.markup import escape

    from payevents.contracts.channel import DLQ_REASON, dead_letter_topic_for, topic_for

    settings = o.settings()
    topic = dead_letter_topic_for(settings.env) if dlq else topic_for(settings.env)
    console = Console(highlight=False)
    t = _transport(settings)
    shown = 0
    try:
        info = t.describe(topic)
        positions = {p: (0 if from_beginning else end) for p, end in info.end_offsets.items()}
        if not as_json:
            console.print(f"[bold]{topic}[/] via {settings.broker} — {info.partitions} partitions, "
                          f"{'from the beginning' if from_beginning else 'new records'}"
                          f"{'' if follow else ', no follow'} (Ctrl-C to stop)")
        while True:
            batch = []
            for p in sorted(positions):
                msgs = t.read(topic, p, positions[p], max_records=200)
                if msgs:
                    positions[p] = msgs[-1].offset + 1
                    batch.extend(msgs)
            batch.sort(key=lambda m: (m.timestamp_ms, m.partition, m.offset))
            for m in batch:
                d = _describe_record(m)
                key = m.key.decode("utf-8", "replace") if m.key is not None else None
                if as_json:
                    typer.echo(json.dumps({"partition": m.partition, "offset": m.offset, "key": key, **d,
                                           **({"reason": m.header(DLQ_REASON)} if dlq else {})}))
                else:
                    legacy = " [magenta]legacy[/]" if d["legacy"] else ""
                    bad = f" [red]{escape(d['error'])}[/]" if d["error"] else ""
                    reason = f" [red]{escape(m.header(DLQ_REASON) or '')}[/]" if dlq else ""
                    console.print(
                        f"[dim]p{m.partition}@{m.offset:<6}[/] [cyan]{escape(key or '-'):<16}[/] "
                        f"[bold]{escape(d['eventType'] or '?'):<17}[/] {escape(d['version'] or '?'):<6} "
                        f"{escape(d['eventId'] or '-'):<36} [green]{escape(d['amount'] or ''):>16}[/]"
                        f"{legacy}{bad}{reason}"
                    )
                shown += 1
                if limit is not None and shown >= limit:
                    return
            if not batch:
                if not follow:
                    return
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        t.close()


# -- dlq -------------------------------------------------------------------------------------------------


def _say_whose_letters(settings: Settings, service: str) -> None:
    """Nothing matched ``--service``: say (on stderr) which services do have dead letters — a typo would
    otherwise look like a clean channel."""
    from payevents.contracts.cardguard import safe_repr
    from payevents.runtime.deadletter import list_dead_letters

    others = sorted({d.service for d in list_dead_letters(settings, MAX_STORED)})
    typer.echo(f"no dead letters of service {safe_repr(service)}; " + (
        f"services with dead letters: {', '.join(map(safe_repr, others))}" if others
        else "the dead-letter channel is empty"), err=True)


@dlq_app.command("list")
@common(output="json", broker=True, database=False)
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="newest N dead letters")] = 50,
    service: Annotated[str | None, typer.Option("--service", help="only those of this service")] = None,
    *, o: Common,
) -> None:
    """Dead letters with their reasons (newest last)."""
    from payevents.runtime.deadletter import list_dead_letters

    letters = list_dead_letters(o.settings(), limit, service=service)
    if service is not None and not letters:
        _say_whose_letters(o.settings(), service)
    if o.json:
        echo_json([d.to_dict() for d in letters], ascii_only=True)
        return
    print_table(f"dead letters ({len(letters)})",
                ["dlq p@offset", "from p@offset", "service", "key", "eventType", "failedAt", "reason"],
                ([f"{d.partition}@{d.offset}", f"{d.original_partition}@{d.original_offset}", d.service,
                  d.key.decode("utf-8", "replace") if d.key is not None else "-", d.event_type or "?",
                  d.failed_at, d.reason] for d in letters), overflow="fold")  # fmt: skip


@dlq_app.command("show")
@common(broker=True, database=False)
def dlq_show(
    partition: Annotated[int, typer.Argument(min=0, max=MAX_PARTITIONS - 1, help="partition of the dead-letter topic")],
    offset: Annotated[int, typer.Argument(min=0, max=MAX_STORED, help="offset in that partition")],
    *, o: Common,
) -> None:
    """One dead letter: its reason, origin, headers and original value (JSON)."""
    from payevents.runtime.deadletter import show

    echo_json(show(o.settings(), partition, offset).to_dict(), ascii_only=True)


@dlq_app.command("replay")
@common(broker=True, database=False)
def dlq_replay(
    partition: Annotated[int | None, typer.Option("--partition", min=0, max=MAX_PARTITIONS - 1,
                                                            help="replay one: its dead-letter partition")]
    = None,
    offset: Annotated[int | None, typer.Option("--offset", min=0, max=MAX_STORED,
                                               help="replay one: its dead-letter offset")] = None,
    service: Annotated[str | None, typer.Option("--service", help="replay the dead letters of this service")] = None,
    all_: Annotated[bool, typer.Option("--all", help="replay the dead letters of every service")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="at most this many (newest)")] = 1000,
    *, o: Common,
) -> None:
    """Re-publish dead letters to the channel (original bytes, key and headers) after a fix.
    Consumers remove the duplicates by eventId, so replaying twice is harmless."""
    from payevents.runtime.deadletter import replay

    one = partition is not None or offset is not None
    if one and (partition is None or offset is None):
        raise typer.BadParameter("give both --partition and --offset", param_hint="--partition/--offset")
    if not one and service is None and not all_:
        raise typer.BadParameter("choose --partition/--offset, --service or --all", param_hint="dlq replay")
    done = replay(o.settings(), partition=partition, offset=offset, service=service, limit=limit)
    if service is not None and not done.sent and not done.held:
        _say_whose_letters(o.settings(), service)
    for letter, delivery in done.sent:
        typer.echo(f"replayed dlq {letter.partition}@{letter.offset} ({letter.service}: {letter.reason}) "
                   f"-> {delivery.topic} {delivery.partition}@{delivery.offset}")
    for letter, problem in done.held:
        typer.echo(f"held back dlq {letter.partition}@{letter.offset} ({letter.service}): the channel's rules "
                   f"still refuse it: {problem}")
    typer.echo(f"{len(done.sent)} dead letters re-published"
               + (f", {len(done.held)} held back (every service would dead-letter them again)" if done.held else ""))


# -- audit -----------------------------------------------------------------------------------------------


@audit_app.command("verify")
@common(output="plain")
def audit_verify(*, o: Common) -> None:
    """Re-walk the outbox hash chain; exit 1 and name the first broken position if a stored event was
    edited, deleted or inserted."""
    from payevents.runtime import audit

    report = audit.verify(o.settings())
    if o.json:
        typer.echo(json.dumps({"ok": report.ok, "checked": report.checked,
                               "firstBrokenSeq": report.first_broken_seq, "reason": report.reason}, indent=2))
        if not report.ok:
            raise typer.Exit(1)
        return
    if getattr(report, "ok", False):
        typer.secho(str(report), fg=typer.colors.GREEN)
        return
    typer.secho(str(report), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


# -- outbox ------------------------------------------------------------------------------------------------


def _payments_engine(settings: Settings) -> Any:
    from payevents.services.payments import store

    return store.engine(settings)


@outbox_app.command("set-aside")
@common(output="json")
def outbox_set_aside(
    include_resent: Annotated[bool, typer.Option("--all", help="also those re-sent since")] = False,
    *, o: Common,
) -> None:
    """Events the broker refused for good (too large, invalid topic), with their reasons. They stay in the
    outbox, unpublished; the relay went on with the others."""
    from payevents.runtime.outbox import list_set_aside

    rows = list_set_aside(_payments_engine(o.settings()), include_resent=include_resent)
    if o.json:
        echo_json([a.to_dict() for a in rows], ascii_only=True)
        return
    print_table(f"set aside by the relay ({len(rows)})",
                ["seq", "event", "payment", "bytes", "times", "set aside at", "reason"],
                ([str(a.seq), f"{a.event_type} {a.event_id}", a.payment_id, str(a.size),
                  f"{a.times}{'' if a.waiting else ' (re-sent)'}",
                  time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.set_aside_at)), a.reason] for a in rows),
                overflow="fold")  # fmt: skip


@outbox_app.command("resend")
@common()
def outbox_resend(
    seqs: Annotated[list[int] | None, typer.Argument(
        min=1, max=MAX_STORED, help="outbox seqs to re-send (see: payevents outbox set-aside)")]
    = None,
    all_: Annotated[bool, typer.Option("--all", help="re-send every event set aside")] = False,
    *, o: Common,
) -> None:
    """Put set-aside events back to pending after the cause was fixed; the relay tries them again (one
    refused again is set aside again). Consumers drop duplicates by eventId."""
    from payevents.runtime.outbox import resend

    if not seqs and not all_:
        raise typer.BadParameter("name the seqs to re-send, or --all", param_hint="SEQS")
    if seqs and all_:
        raise typer.BadParameter("either seqs or --all", param_hint="SEQS")
    done = resend(_payments_engine(o.settings()), None if all_ else seqs)
    skipped = sorted(set(seqs or ()) - set(done))
    for seq in done:
        typer.echo(f"outbox seq {seq}: back to pending")
    if skipped:
        typer.echo(f"not set aside (or re-sent already): {' '.join(map(str, skipped))}", err=True)
    typer.echo(f"{len(done)} events put back to pending")


@outbox_app.command("republish")
@common(broker=True)
def outbox_republish(
    partition: Annotated[int, typer.Option("--partition", min=0, max=MAX_PARTITIONS - 1,
                                           help="the channel's partition the records were on")],
    from_offset: Annotated[int, typer.Option("--from-offset", min=0, max=MAX_STORED, help="first offset lost")],
    to_offset: Annotated[int, typer.Option("--to-offset", min=0, max=MAX_STORED, help="last offset lost")],
    *, o: Common,
) -> None:
    """Publish again the outbox events the relay published at those offsets of the channel — records its retention
    deleted before a service read them (the service's log names the command). Consumers drop duplicates by
    eventId."""
    from payevents.runtime.relay import republish

    if to_offset < from_offset:
        raise typer.BadParameter(f"{to_offset} is before --from-offset {from_offset}", param_hint="--to-offset")
    done = republish(o.settings(), partition, from_offset, to_offset)
    for seq, why in sorted(done.refused.items()):
        typer.echo(f"outbox seq {seq}: not re-published: {why}", err=True)
    if done.not_ours:
        typer.echo(f"{done.not_ours} of the {to_offset - from_offset + 1} offsets were not published by this outbox",
                   err=True)
    typer.echo(f"{len(done.sent)} events re-published" + (f", {len(done.refused)} not" if done.refused else ""))
    if done.refused:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("relay")(relay_cmd)
    app.command("workers")(workers_cmd)
    app.command("tail")(tail_cmd)
    app.add_typer(topics_app)
    app.add_typer(dlq_app)
    app.add_typer(audit_app)
    app.add_typer(outbox_app)


