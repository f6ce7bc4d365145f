"""The `tunewise` command line: one thin function per command; the work lives in the modules they call.

Each command is registered from its own module under tunewise/commands/, so commands import their heavy
dependencies only when they run.
"""

from __future__ import annotations

import sys

import typer

from tunewise.errors import TunewiseError

app = typer.Typer(
    name="tunewise",
    help="The LoRA decision framework as a tool: advise, estimate, train (LoRA / QLoRA / full), evaluate, "
         "analyze intruder dimensions, compare, serve many adapters on one base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module under tunewise.commands, attribute): each module exposes `register(app)`.
COMMAND_MODULES = ["doctor", "demo", "advise", "estimate", "data", "tasks", "train", "eval", "compare",
                   "analyze", "continual", "serve", "merge", "report"]


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tunewise.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tunewise.commands.{name}":
                continue  # command not built yet
            raise
        module.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except TunewiseError as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        if e.hint:
            typer.secho(f"  what to do: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
