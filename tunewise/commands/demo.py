"""`tunewise demo`: the main job end to end on the shipped tiny base, in a few minutes on 2 CPU cores.

advise -> train LoRA, QLoRA and full fine-tuning on a built-in task -> evaluate (task score + retention) ->
intruder analysis -> HTML report.
"""

from __future__ import annotations

import time

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        task: str = typer.Option("structured", help="Built-in task: structured, classify, sql, math."),
        out: str = typer.Option("runs/demo", help="Output folder (repeating the demo reuses finished runs)."),
        train_size: int = typer.Option(600, help="Training examples."),
        eval_size: int = typer.Option(40, help="Test examples scored."),
        epochs: float = typer.Option(2.0),
    ) -> None:
        """Run the whole framework on the shipped tiny base and print where the report is."""
        from tunewise.advise.engine import AdviseInput, advise
        from tunewise.commands.compare import check_sizes, print_table
        from tunewise.compare import CompareSpec, run_compare
        from tunewise.ownership import claim_dir
        from tunewise.report import write_report
        from tunewise.tasks import get_task

        get_task(task)
        check_sizes(epochs, None, 16, train_size, eval_size)
        claim_dir(out, "compare", task)  # the demo is a compare; same folder rule
        t0 = time.time()
        task_for_advice = {"classify": "classification", "math": "math"}.get(task, task)
        typer.secho(f"1/4 advise: task {task_for_advice} on the shipped tiny base, this CPU", bold=True)
        advice = advise(AdviseInput(task=task_for_advice, model="tiny", device="cpu"))
        typer.echo(f"  {advice.decision}")
        for r in advice.reasons[:3]:
            typer.echo(f"  + {r['reason']}")
        typer.secho("2/4 train LoRA, QLoRA and full fine-tuning with the same data and budget", bold=True)
        spec = CompareSpec(base="tiny", task=task, out=out, train_size=train_size, eval_size=eval_size,
                           epochs=epochs)
        result = run_compare(spec, quiet=False, log=lambda m: typer.echo(f"  {m}"))
        typer.secho("3/4 evaluate, retention and intruder dimensions", bold=True)
        print_table(result)
        typer.secho("4/4 report", bold=True)
        report = write_report(out)
        typer.echo(f"report: {report}")
        typer.echo(f"demo finished in {time.time() - t0:.0f}s")
