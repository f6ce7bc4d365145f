"""`tunewise continual`: sequential fine-tuning and the forgetting matrix.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunewise import progress
from tunewise.userfiles import check_output


def register(app: typer.Typer) -> None:
    @app.command()
    def continual(
        config: Path = typer.Argument(..., help="YAML: base, tasks (in order), methods [{method, r, lr}], sizes."),
        as_json: bool = typer.Option(False, "--json"),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Train tasks one after another (LoRA merged and re-started per stage, as in the paper) and print the
        accuracy matrix (rows: after stage i; columns: task j), average forgetting and intruders per stage."""
        from tunewise.continual import check_tasks, load_continual_config, run_continual

        cfg = load_continual_config(config)
        check_output(cfg.out, f"{config}: out", "dir")  # before hours of training, not after
        check_tasks(cfg)
        with progress.quiet(quiet):
            summary = run_continual(cfg, quiet=quiet, log=(lambda *_: None) if quiet else typer.echo)
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        console = Console()
        for label, r in summary["methods"].items():
            t = Table(title=f"{label}: average forgetting {r['forgetting']:.3f}")
            t.add_column("after stage")
            for name in summary["tasks"]:
                t.add_column(name, justify="right")
            t.add_column("intruders", justify="right")
            for i, row in enumerate(r["matrix"]):
                t.add_row(f"{i + 1} ({summary['tasks'][i]})", *[f"{v:.3f}" for v in row], str(r["intruders"][i]))
            console.print(t)
        typer.echo(f"written: {Path(cfg.out) / 'continual.json'}, {Path(cfg.out) / 'continual.png'}")
