"""`tunewise advise --pilot`: the command-line side (flags -> PilotSpec, progress, the summary)."""

from __future__ import annotations

import json

import typer


def run_pilot_cli(base, data, eval_file, task, task_kind, budget, methods, points, epochs, eval_size, find_lr_steps,
                  scorer, out, force, as_json) -> None:
    from tunewise.advise.pilot import PilotSpec, check, run_pilot
    from tunewise.errors import TunewiseError
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
        raise TunewiseError("; ".join(problems), "tunewise advise --pilot --base tiny --data train.jsonl")
    claim_dir(out, "pilot", str(data), force=force)
    log = (lambda *_: None) if as_json else (lambda m: typer.echo(m, err=True))
    result = run_pilot(spec, log=log)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
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
