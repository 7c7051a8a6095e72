"""Options shared by every command that touches the channel or a store.

Use them as parameter annotations and build the settings with :func:`load_settings`::

    def cmd(env: EnvOpt = None, broker: BrokerOpt = None, data_dir: DataDirOpt = None,
            database_url: DatabaseUrlOpt = None) -> None:
        settings = load_settings(env, broker, data_dir, database_url)
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from payevents.settings import Settings

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
