"""`tunewise pilot`: measure LoRA against full fine-tuning (and QLoRA) on the user's data inside a time budget
(the work: tunewise/advise/pilot.py). `tunewise advise --pilot` is the old spelling and still runs it.

The modules that do the work are imported inside the commands, so --help stays light
(tunewise/commands/__init__.py).
"""

from __future__ import annotations

import json

import typer

from tunewise.errors import TunewiseError


def pilot(
    base: str = typer.Option(None, "--base", help="Base model ('tiny', 'smollm2', a folder, a hub id)."),
    data: str = typer.Option(None, "--data", help="Training data (a file); the pilot trains on growing slices "
                             "of it."),
    eval_file: str = typer.Option(None, "--eval", help="Validation file (default: hold out part of --data); its "
                                  "folder's meta.json names the scorer."),
    task: str = typer.Option(None, "--task", "-t", help="The rule table's task (classification, structured, "
                             "style, domain, sql, code, math, logic or open-ended); default from --task-kind or "
                             "the data's meta.json."),
    task_kind: str = typer.Option(None, "--task-kind", help="representation | sql | reasoning | other (which "
                                  "rules apply; default from --task or the data's meta.json)."),
    budget: float = typer.Option(5.0, "--budget", help="Minutes for the whole pilot."),
    methods: str = typer.Option("lora,full", "--methods", help="Methods to measure (add qlora to measure it "
                                "too)."),
    points: str = typer.Option(None, "--points", help="Slice sizes, e.g. 32,64,128 (default: planned from the "
                               "budget, 3 points)."),
    epochs: float = typer.Option(2.0, "--epochs", help="Epochs over each slice."),
    eval_size: int = typer.Option(80, "--eval-size", help="Validation examples scored per point."),
    find_lr_steps: int = typer.Option(30, "--find-lr-steps", help="Range-test steps per method (0: size-default "
                                      "lr)."),
    scorer: str = typer.Option(None, "--scorer", help="Scorer when the data has no meta.json (default exact)."),
    out: str = typer.Option("runs/pilot", "--out", help="Output folder."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder tunewise did not create."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure LoRA against full fine-tuning on your data, inside a time budget, instead of reciting the rules.

    LoRA and full (--methods) train on growing slices of --data and are scored on --eval; learning curves (or, when
    the last slice is all of --data, the gap paired per example) beat the rule table when they separate the
    methods; the verdict says how many points the gap is known to. Writes OUT/pilot.{json,html}, recommended.yaml
    (lr from the range test). `tunewise advise --pilot` is the old spelling.
    """
    run_pilot_command(base, data, eval_file, task, task_kind, budget, methods, points, epochs, eval_size,
                      find_lr_steps, scorer, out, force, as_json)


def register(app: typer.Typer) -> None:
    app.command()(pilot)


def run_pilot_command(base, data, eval_file, task, task_kind, budget, methods, points, epochs, eval_size,
                      find_lr_steps, scorer, out, force, as_json) -> None:
    """The flags as a PilotSpec, checked together; the pilot; its summary (`tunewise advise --pilot` too)."""
    from tunewise.advise.pilot import PilotSpec, check, run_pilot
    from tunewise.ownership import claim_dir

    problems = [] if base else ["--base: missing; the model to pilot ('tiny', 'smollm2', a folder or a hub id)"]
    if not data:
        problems.append("--data: missing; the training file")
    try:
        sizes = [int(x) for x in points.split(",") if x.strip()] if points else None
    except ValueError:
        problems.append(f"--points '{points}': expected whole numbers, e.g. 32,64,128")
        sizes = None
    spec = PilotSpec(base=base or "", train=data or "", eval=eval_file, task=task, task_kind=task_kind,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], budget_min=budget, out=out,
                     points=sizes, epochs=epochs, eval_size=eval_size, find_lr_steps=find_lr_steps, scorer=scorer)
    problems += check(spec) if data else []
    if problems:
        raise TunewiseError("; ".join(problems), "tunewise pilot --base tiny --data train.jsonl")
    claim_dir(out, "pilot", str(data), force=force)
    log = (lambda *_: None) if as_json else (lambda m: typer.echo(m, err=True))
    result = run_pilot(spec, log=log)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    _print_summary(result)


def _print_summary(result: dict) -> None:
    v = result["verdict"]
    typer.echo(f"\nRecommendation: {str(v['recommendation']).upper()} (evidence: {v['evidence']}"
               f"{'; the measurement contradicts the rule table' if v['contradicts_rules'] else ''})")
    typer.echo(v["text"])
    for m, p in result["predictions"].items():
        typer.echo(f"  {m}: predicted {result['metric']} at {result['full_size']} examples {p['score']:.3f} "
                   f"[{p['low']:.3f}, {p['high']:.3f}]; best measured {p['measured_best']:.3f}")
    for m, note in result["lr_notes"].items():
        typer.echo(f"  lr {m}: {note}")
    for s in result["skipped"]:
        typer.echo(f"  skipped: {s}")
    typer.echo(f"report: {result['html']}")
    if result.get("config"):
        typer.echo(f"config: {result['config']}  (tunewise train {result['config']})")
