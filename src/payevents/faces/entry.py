"""The ``payevents`` command's entry point, free of imports of its own.

``multiprocessing``'s spawn runs the parent's main script again in each child it starts, as ``__mp_main__``: every
worker the command starts, and every delivery process of a notifications worker, runs the command's script before
its own target. Whatever the script imports, they import too; it was the command line itself (typer, click, rich:
~100 modules and 30–60 ms of CPU in each process). Here it is imported when the command runs."""

from __future__ import annotations


def main() -> None:
    """Run the ``payevents`` command (:func:`payevents.faces.cli.main`)."""
    from payevents.faces.cli import main as run_command

    run_command()
