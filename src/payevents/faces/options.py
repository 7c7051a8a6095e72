"""Options shared by every command that touches the channel or a store, declared once.

A command declares only its own parameters and a keyword-only ``o: Common``; :func:`common` adds the shared
options (``--output``/``--json``, ``--env``, ``--broker``, ``--data-dir``, ``--database-url``) to what Typer
sees, and hands them over parsed::

    @app.command("show")
    @common(output="json")
    def show_cmd(payment_id: PaymentArg, *, o: Common) -> None:
        show(payments.show(o.settings(), payment_id), o, table=...)

The aliases (:data:`EnvOpt`, ...) stay for the commands with options of their own shape.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from payevents.settings import Settings

#: the longest any command waits or lets a run take (seconds; NaN is outside every range)
MAX_WAIT_S = 86_400.0


EnvOpt = Annotated[
    str | None, typer.Option("--env", help="dev, sit or prod (or PAYEVENTS_ENV); required, no default")
]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", help="embedded (default) or kafka://host:port,... (PAYEVENTS_BROKER)")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory of the embedded default (PAYEVENTS_DATA_DIR)")
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://u@host/db (PAYEVENTS_DATABASE_URL)"),
]


def load_settings(
    env: str | None = None,
    broker: str | None = None,
    data_dir: Path | None = None,
    database_url: str | None = None,
    **more: Any,
) -> Settings:
    """Settings from PAYEVENTS_* with these flags on top; errors name the setting and the rule."""
    overrides = {"env": env, "broker": broker, "data_dir": data_dir, "database_url": database_url, **more}
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


class Output(enum.StrEnum):
    """What a command prints: a table for people (the default), or JSON for scripts."""

    table = "table"
    json = "json"


class OutputCsv(enum.StrEnum):
    """:class:`Output` plus CSV (reports)."""

    table = "table"
    csv = "csv"
    json = "json"


_OUTPUT_HELP = "print a table (default) or JSON"
OutputOpt = Annotated[Output, typer.Option("--output", "-o", case_sensitive=False, help=_OUTPUT_HELP)]
OutputCsvOpt = Annotated[
    OutputCsv, typer.Option("--output", "-o", case_sensitive=False, help="print a table (default), CSV or JSON")
]
#: the options of the commands that create a payment or an invoice
CustomerIdOpt = Annotated[str, typer.Option("--customer", help="customerId")]
CurrencyOpt = Annotated[str, typer.Option("--currency", help="ISO 4217 code, e.g. USD")]
#: the former flags, kept hidden so existing scripts go on working
JsonFlag = Annotated[bool, typer.Option("--json", hidden=True, help="same as --output json")]
FormatFlag = Annotated[str | None, typer.Option("--format", hidden=True, help="same as --output")]


def json_wanted(output: Output | OutputCsv | str, json_flag: bool = False) -> bool:
    """True when the command should print JSON (``--output json`` or the hidden ``--json``)."""
    return json_flag or getattr(output, "value", output) == "json"


def output_format(output: Output | OutputCsv | str, legacy: str | None, choices: tuple[str, ...]) -> str:
    """The chosen format; the hidden ``--format`` (checked against ``choices``) wins over the default."""
    if legacy is not None:
        value = legacy.strip().lower()
        if value not in choices:
            raise typer.BadParameter(f"{legacy!r} is not one of {', '.join(choices)}", param_hint="--output")
        return value
    return str(getattr(output, "value", output))


#: which output options a command has: ``json`` = --output table|json and the hidden --json; ``format`` = --output
#: table|json and the hidden --format; ``plain`` = --output table|json only; ``csv`` = --output table|csv|json and
#: the hidden --format
OutputKind = Literal["json", "format", "plain", "csv"]


@dataclasses.dataclass(frozen=True)
class Common:
    """The shared options of one command, parsed (see :func:`common`)."""

    env: str | None = None
    broker: str | None = None
    data_dir: Path | None = None
    database_url: str | None = None
    #: the chosen output: "table", "json" or "csv"
    fmt: str = "table"

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def settings(self, **more: Any) -> Settings:
        return load_settings(self.env, self.broker, self.data_dir, self.database_url, **more)


def _opt(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


_OUTPUTS: dict[str, list[inspect.Parameter]] = {
    "json": [_opt("output", OutputOpt, Output.table), _opt("json_flag", JsonFlag, False)],
    "format": [_opt("output", OutputOpt, Output.table), _opt("legacy_format", FormatFlag, None)],
    "plain": [_opt("output", OutputOpt, Output.table)],
    "csv": [_opt("output", OutputCsvOpt, OutputCsv.table), _opt("legacy_format", FormatFlag, None)],
}


def common(*, output: OutputKind | None = None, broker: bool = False, database: bool = True,
           data_dir: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared options: ``output`` (see :data:`OutputKind`), then --env, --broker (when
    ``broker``), --data-dir (when ``data_dir``), --database-url (when ``database``). The command takes them as
    its keyword-only ``o: Common``."""
    extra = list(_OUTPUTS[output]) if output else []
    extra.append(_opt("env", EnvOpt, None))
    if broker:
        extra.append(_opt("broker", BrokerOpt, None))
    if data_dir:
        extra.append(_opt("data_dir", DataDirOpt, None))
    if database:
        extra.append(_opt("database_url", DatabaseUrlOpt, None))
    names = [p.name for p in extra]
    choices = ("table", "csv", "json") if output == "csv" else ("table", "json")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "o"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            shared = {n: kwargs.pop(n) for n in names}
            fmt = output_format(shared.pop("output", Output.table), shared.pop("legacy_format", None), choices)
            if shared.pop("json_flag", False):
                fmt = "json"
            return fn(**kwargs, o=Common(fmt=fmt, **shared))

        params = own + extra
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap


def echo_json(value: Any, *, ascii_only: bool = False) -> None:
    """``value`` (structs, dataclasses, Decimal, datetimes, builtins) as indented JSON; ``ascii_only`` escapes
    non-ASCII characters as ``json.dumps`` does (the commands that always printed it that way)."""
    import msgspec

    if ascii_only:
        typer.echo(json.dumps(msgspec.to_builtins(value), indent=2))
    else:
        typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


Column = str | tuple[str, str]


def print_table(title: str, columns: Iterable[Column], rows: Iterable[Sequence[str]], *,
                overflow: str | None = None) -> None:
    """A rich table: ``columns`` are names, or (name, justify); ``overflow="fold"`` folds long cells onto more
    lines instead of cutting them."""
    from rich.console import Console

    table = make_table(title, columns, overflow=overflow)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def make_table(title: str, columns: Iterable[Column], *, overflow: str | None = None) -> Any:
    """The empty rich table of :func:`print_table` (for tables with sections and styled rows)."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        name, justify = (col, "left") if isinstance(col, str) else col
        kw: dict[str, Any] = {"overflow": overflow} if overflow else {}
        table.add_column(name, justify=justify, **kw)  # type: ignore[arg-type]
    return table


def show(o: Common, value: Any, table: Callable[[], None], *, ascii_only: bool = False) -> None:
    """Print ``value`` as JSON when the command was asked for JSON, else draw it with ``table``."""
    if o.json:
        echo_json(value, ascii_only=ascii_only)
    else:
        table()
