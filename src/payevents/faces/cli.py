"""The ``payevents`` command line. Command groups live in :mod:`payevents.faces.commands`."""

from __future__ import annotations

import importlib
import signal
import sys

import typer

from payevents.errors import PayeventsError

#: command modules, in help order; each has register(app)
COMMAND_MODULES = (
    "contracts",  # validate, schema, example
    "channel",  # run, relay, topics, tail, dlq, audit
    "payments",  # payments ...
    "ledger",
    "invoices",
    "analytics",
    "notifications",  # notifications, customers
    "demo",  # the main job
    "web",  # serve
    "catalog",
    "bench",
    "lag",  # lag [--wait]
    "soak",  # soak: seeded runs under faults, every invariant checked
    "kafka",  # kafka up: a local Apache Kafka
)

app = typer.Typer(
    name="payevents",
    help="Payment events made real: the payments.{env}.events channel, its contracts and services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Payment events made real: the payments.{env}.events channel, its contracts and services."""


@app.command()
def version() -> None:
    """Print the payevents version."""
    from payevents import __version__

    typer.echo(f"payevents {__version__}")


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"payevents.faces.commands.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"payevents.faces.commands.{_name}":
            raise
        continue
    _mod.register(app)


#: exit code of a command whose database or broker is unreachable
EXIT_UNREACHABLE = 3


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Errors a user can act on are one line on stderr and a non-zero exit, never a traceback.

    SIGTERM and SIGHUP (a ``kill``, a CI's timeout, a closed terminal) end a command as Ctrl-C does, through its
    clean-up — the brokers a soak or a benchmark started, temporary directories — instead of at once, which left
    them running: a command with a shutdown of its own (``run``, ``relay``, ``serve``, ``kafka up``) installs its
    handlers over these. A signal ignored by the caller (``nohup``) stays ignored."""
    from payevents.runtime.runner import unreachable

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _exit_on_signal)
    try:
        app()
    except Exception as exc:
        from payevents.contracts.cardguard import mask_card_text

        reason = unreachable(exc)
        if reason is not None:
            typer.secho(f"error: {mask_card_text(reason)}", fg=typer.colors.RED, err=True)
            sys.exit(EXIT_UNREACHABLE)
        if isinstance(exc, PayeventsError):
            typer.secho(f"error: {mask_card_text(str(exc))}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        if isinstance(exc, OSError) and exc.filename is not None:  # a path it cannot use: --data-dir a file, ...
            where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
            typer.secho(f"error: {mask_card_text(where)}: {exc.strerror or type(exc).__name__}",
                        fg=typer.colors.RED, err=True)
            sys.exit(2)
        raise
