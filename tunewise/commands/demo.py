"""`tunewise demo`: the main job end to end on the shipped tiny base (a few minutes on 2 CPU cores), or on any
base with --base (smollm2: a real pretrained LLM; a smaller budget, as its steps cost ~30x the tiny base's).

advise -> train LoRA, QLoRA and full fine-tuning on a built-in task -> evaluate (task score + retention) ->
intruder analysis -> HTML report.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tunewise.commands.compare import check_sizes, print_table
from tunewise.defaults import METHODS, TINY_BASE


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        task: str = typer.Option("structured", help="Built-in task: structured, classify, sql, math."),
        base: str = typer.Option("tiny", help="Base model: 'tiny' (shipped), 'smollm2' (SmolLM2-135M-Instruct) "
                                 "or a model folder."),
        out: str = typer.Option(None, help="Output folder (default runs/demo, runs/demo-BASE for other bases; "
                                "repeating the demo reuses finished runs)."),
        train_size: int = typer.Option(None, help="Training examples (default 600 on tiny, 240 otherwise)."),
        eval_size: int = typer.Option(None, help="Test examples scored (default 120 on tiny, 80 otherwise)."),
        epochs: float = typer.Option(None, help="Passes over the data (default 2 on tiny, 1 otherwise)."),
        methods: str = typer.Option(None, help="Methods (default lora,qlora,full on tiny, lora,full otherwise: "
                                    "QLoRA's CPU kernels make it the slowest on a real model)."),
    ) -> None:
        """Run the whole framework on a base (the shipped tiny one by default) and print where the report is."""
        from tunewise.advise.engine import AdviseInput, advise
        from tunewise.compare import CompareSpec, run_compare
        from tunewise.decide.vocabulary import advise_task_of
        from tunewise.ownership import claim_dir
        from tunewise.report import write_report
        from tunewise.tasks import get_task

        get_task(task)
        tiny = base == TINY_BASE
        out = out or ("runs/demo" if tiny else f"runs/demo-{Path(base).name}")
        train_size = train_size or (600 if tiny else 240)
        eval_size = eval_size or (120 if tiny else 80)
        epochs = epochs or (2.0 if tiny else 1.0)
        method_list = [m.strip() for m in (methods or (",".join(METHODS) if tiny else "lora,full")).split(",")]
        check_sizes(epochs, None, 16, train_size, eval_size)
        claim_dir(out, "compare", task)  # the demo is a compare; same folder rule
        t0 = time.time()
        task_for_advice = advise_task_of(task)
        where = "the shipped tiny base" if tiny else base
        typer.secho(f"1/4 advise: task {task_for_advice} on {where}, this CPU", bold=True)
        advice = advise(AdviseInput(task=task_for_advice, model=base, device="cpu"))
        typer.echo(f"  {advice.decision}")
        for r in advice.reasons[:3]:
            typer.echo(f"  + {r['reason']}")
        typer.secho(f"2/4 train {', '.join(method_list)} with the same data and budget", bold=True)
        spec = CompareSpec(base=base, task=task, out=out, train_size=train_size, eval_size=eval_size,
                           epochs=epochs, methods=method_list)
        result = run_compare(spec, quiet=False, log=lambda m: typer.echo(f"  {m}"))
        typer.secho("3/4 evaluate, retention and intruder dimensions", bold=True)
        print_table(result)
        typer.secho("4/4 report", bold=True)
        report = write_report(out)
        typer.echo(f"report: {report}")
        typer.echo(f"demo finished in {time.time() - t0:.0f}s")
