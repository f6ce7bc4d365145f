"""`tunewise report`: a self-contained HTML report of a run or a comparison.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(path: Path = typer.Argument(..., help="A run directory or a compare directory.")) -> None:
        """Write PATH/report.html (plots embedded, also saved as PNGs beside it) and print where it is."""
        from tunewise.report import write_report

        typer.echo(f"report: {write_report(path)}")
