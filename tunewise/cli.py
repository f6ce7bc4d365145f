"""The `tunewise` command line: one thin function per command; the work lives in the modules they call.

Each command is registered from its own module under tunewise/commands/, so commands import their heavy
dependencies only when they run.

PyYAML is imported only to name a YAML error, after one happened.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import traceback

import typer

from tunewise.errors import TunewiseError
from tunewise.inputs import accepts

EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug in tunewise, not bad input (2) nor a requested failure (1)

app = typer.Typer(
    name="tunewise",
    help="The LoRA decision framework as a tool: advise, estimate, train (LoRA / QLoRA / full), evaluate, "
         "analyze intruder dimensions, compare, serve many adapters on one base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module under tunewise.commands, attribute): each module exposes `register(app)`.
COMMAND_MODULES = ["doctor", "demo", "advise", "pilot", "estimate", "data", "tasks", "train", "eval", "compare",
                   "analyze", "continual", "serve", "chat", "merge", "export", "report"]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tunewise.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tunewise.commands.{name}":
                continue  # command not built yet
            raise
        module.register(app)


_register_all()


def _finite(check):
    """A click callback that refuses inf and nan before `check` (the option's own callback, if any) runs: float()
    reads both, and a min/max range lets nan through."""
    def callback(ctx, param, value):
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise typer.BadParameter(f"{number!r} is not a finite number", ctx, param)
        return check(ctx, param, value) if check is not None else value

    return callback


def finite_numbers(command) -> None:
    """Every float option and argument of `command` and its subcommands follows the configs' numeric rule
    (tunewise/inputs.py): finite. Whole-number options parse as int, which never takes true/false."""
    for param in command.params:
        kind = getattr(param, "type_descriptor", None)
        if kind is not None and accepts(kind.annotation, (float,)):
            param.callback = _finite(param.callback)
    for sub in getattr(command, "commands", {}).values():
        finite_numbers(sub)


def command():
    """The click command `main` runs: the typer app with the numeric rule on every float option."""
    cmd = typer.main.get_command(app)
    finite_numbers(cmd)
    return cmd


def _input_error(e: BaseException) -> str | None:
    """One line for the generic errors a user's input can raise deep inside a library (a damaged file, a path
    that cannot be written); None for anything else, which is a bug in tunewise and keeps its traceback."""
    import yaml

    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start})"
    if isinstance(e, json.JSONDecodeError):
        return f"a JSON file is damaged or not JSON ({e.msg} at line {e.lineno})"
    if isinstance(e, yaml.YAMLError):
        return f"a YAML file is not valid YAML ({getattr(e, 'problem', None) or e})"
    if isinstance(e, OSError) and (e.filename or e.strerror):
        where = f"'{e.filename}': " if e.filename else ""
        return f"{where}{e.strerror or e}"
    name = type(e).__name__
    if name in ("SafetensorError", "UnpicklingError") or (
            isinstance(e, (EOFError, RuntimeError)) and "PytorchStreamReader" in str(e)):
        return f"a saved weights file is damaged ({str(e).splitlines()[0][:200] if str(e) else name})"
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error caused by input ends as one line and an exit code (see README: exit codes)."""
    # PyTorch's CPU allocator then gives buffers of 2 MB or more their own 2 MB-aligned, huge-page-advised block.
    # glibc's heap fragments less: on SmolLM2-135M, peak RSS fell by 156 MB for LoRA and 102 MB for full
    # fine-tuning (benchmarks/RESULTS.md, issue 20). Read once, before torch is imported; set it to 0 to opt out.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        command()(args=argv, prog_name="tunewise")
    except TunewiseError as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        if e.hint:
            typer.secho(f"  what to do: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 -- input errors become a line; a bug keeps its traceback
        line = _input_error(e)
        if line is None or os.environ.get("TUNEWISE_DEBUG"):
            traceback.print_exc()
        if line is None:  # not the input: its own exit code, so a script can tell it from 1 ("failed as asked")
            typer.secho("error: an internal error in tunewise, not in your input (traceback above); please report "
                        "it", fg="red", err=True)
            sys.exit(EXIT_INTERNAL)
        typer.secho(f"error: {line}", fg="red", err=True)
        typer.secho("  what to do: check the file or path named; TUNEWISE_DEBUG=1 shows where it was read", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
