"""``payevents catalog build|asyncapi``: the event catalog generated from the code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from payevents.faces.options import EnvOpt, load_settings
from payevents.settings import Settings


def catalog_settings(env: str | None) -> Settings:
    """Settings for documenting the channel. The catalog covers every env (dev, sit, prod), so one is
    needed only to read the other PAYEVENTS_* values (partitions, broker); dev stands in when none is set."""
    if env is None and not os.environ.get("PAYEVENTS_ENV"):
        env = "dev"
    return load_settings(env)


def register(app: typer.Typer) -> None:
    cat = typer.Typer(name="catalog", help="The event catalog, generated from the code.", no_args_is_help=True)

    @cat.command("build")
    def build(
        out: Annotated[Path, typer.Option("--out", help="directory to write the static site into")] = Path(
            "catalog-site"
        ),
        env: EnvOpt = None,
    ) -> None:
        """Write the catalog site: channel page, one page per event and version, history, diffs, AsyncAPI."""
        from payevents.faces.catalog import build_site

        files = build_site(out, catalog_settings(env))
        typer.echo(f"catalog: {len(files)} files in {out} (open {out / 'index.html'})")

    @cat.command("asyncapi")
    def asyncapi(
        out: Annotated[Path | None, typer.Option("--out", help="file to write (default: standard output)")] = None,
        env: EnvOpt = None,
    ) -> None:
        """Print (or write) the AsyncAPI 3.0 document of the channel."""
        from payevents.faces.catalog import asyncapi_document
        from payevents.faces.catalog.jsonfmt import dumps

        text = dumps(asyncapi_document(catalog_settings(env))) + "\n"
        if out is None:
            sys.stdout.write(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            typer.echo(f"asyncapi: wrote {out}")

    app.add_typer(cat, name="catalog")
