"""``payevents validate``, ``payevents schema list|show``, ``payevents example``: the contracts at the terminal."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from payevents.errors import ContractError

schema_app = typer.Typer(name="schema", help="The published JSON Schemas (draft 2020-12).", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _documents(content: bytes) -> tuple[str, list[bytes]]:
    """("document"|"array"|"stream", the documents): one JSON document, a JSON array of events, or NDJSON.

    Nesting is measured before any parser runs (a too-deep input is one document, which the codec rejects
    with its depth rule)."""
    from payevents.contracts.codec import MAX_DEPTH, nesting_depth

    lines = [ln for ln in content.splitlines() if ln.strip()]
    if not lines:
        return "stream", []
    if len(lines) > 1 and nesting_depth(lines[0]) <= MAX_DEPTH:
        try:
            msgspec.json.decode(lines[0])
        except msgspec.DecodeError:
            pass  # the first line is not a whole document: one (pretty-printed or broken) document
        else:
            return "stream", lines
    if nesting_depth(content, MAX_DEPTH + 1) > MAX_DEPTH + 1:  # an array of events adds one level
        return "document", [content]
    try:
        items = msgspec.json.decode(content, type=list[msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "document", [content]
    return "array", [bytes(item) for item in items]


def validate(
    file: Annotated[str, typer.Argument(help="a JSON document, a JSON array of events or NDJSON; - for stdin")] = "-",
) -> None:
    """Validate events: one line each, ``ok <eventType> <version> <eventId>`` or its errors; exit 1 on any error."""
    from payevents.contracts import EventValidationError, decode_event

    if file == "-":
        content = sys.stdin.buffer.read()
    else:
        try:
            content = Path(file).read_bytes()
        except OSError as exc:
            raise _fail(f"{file}: {exc.strerror or exc}") from None
    mode, docs = _documents(content)
    if not docs:
        typer.secho("error: no events in the input", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    failed = 0
    for i, raw in enumerate(docs, start=1):
        where = f" (line {i})" if mode == "stream" else f" (item {i})" if mode == "array" else ""
        try:
            decoded = decode_event(raw)
        except EventValidationError as exc:
            failed += 1
            typer.echo(f"error{where}: " + "; ".join(e.message for e in exc.errors))
            continue
        except Exception as exc:  # a codec bug must still not print a traceback (nor echo the input)
            failed += 1
            typer.echo(f"error{where}: could not be validated ({type(exc).__name__}); please report this input")
            continue
        ev = decoded.event
        if decoded.legacy:
            typer.echo(
                f"ok (legacy {decoded.extras.get('legacyEventType')} {decoded.extras.get('legacyVersion')} "
                f"→ {ev.eventType}) {ev.eventId}"
            )
        else:
            typer.echo(f"ok {ev.eventType} {ev.version} {ev.eventId}")
    typer.echo(f"{len(docs)} event(s): {len(docs) - failed} ok, {failed} failed", err=True)
    if failed:
        raise typer.Exit(1)


@schema_app.command("list")
def schema_list() -> None:
    """List the published schemas: event type, version, file (legacy envelopes are read-only)."""
    from payevents.contracts.schema import list_schemas

    rows = list_schemas()
    width = max(len(s.event_type) for s in rows)
    for s in rows:
        kind = "legacy, read only" if s.legacy else "canonical"
        typer.echo(f"{s.event_type:<{width}}  {s.version:<6}  {kind:<17}  {s.filename}  {s.description}")


@schema_app.command("show")
def schema_show(
    event: Annotated[str, typer.Argument(help="event type, e.g. PaymentProcessed (PAYMENT_PROCESSED: the legacy one)")],
    version: Annotated[str | None, typer.Option("--version", help="schema version; default the latest")] = None,
) -> None:
    """Print the JSON Schema of EVENT exactly as shipped."""
    from payevents.contracts.schema import schema_text

    try:
        text = schema_text(event, version)
    except ContractError as exc:
        raise _fail(str(exc)) from None
    typer.echo(text, nl=not text.endswith("\n"))


def example(
    event: Annotated[str, typer.Argument(help="event type, e.g. PaymentProcessed")],
    version: Annotated[str | None, typer.Option("--version", help="event version; default the latest")] = None,
    pretty: Annotated[bool, typer.Option("--pretty", help="indent the JSON")] = False,
) -> None:
    """Print a valid example of EVENT (``payevents validate`` accepts it)."""
    from payevents.contracts.examples import example_json

    try:
        raw = example_json(event, version)
    except ContractError as exc:
        raise _fail(str(exc)) from None
    if pretty:
        raw = msgspec.json.format(raw, indent=2)
    typer.echo(raw.decode("utf-8"))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.add_typer(schema_app, name="schema")
    app.command("example")(example)
