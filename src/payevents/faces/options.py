"""Options shared by every command that touches the channel or a store.

Use them as parameter annotations and build the settings with :func:`load_settings`::

    def cmd(env: EnvOpt = None, broker: BrokerOpt = None, data_dir: DataDirOpt = None,
            database_url: DatabaseUrlOpt = None) -> None:
        settings = load_settings(env, broker, data_dir, database_url)
"""

from __future__ import annotations

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
