"""What tunewise would have told a user before the study, against what the study measured, task by task.

`tunewise advise` answers from the rule table before any training; `tunewise compare`'s verdict answers from
measured rows. Where the rule and the measurement disagree, the section says so: that is the evidence for
changing a rule.
"""

from __future__ import annotations

from study_claims import Reader, mean
from study_plan import HEADLINE_TASKS, Run

from tunewise.compare import CompareRow, verdict
from tunewise.decide.vocabulary import BUILTIN_ADVISE_TASK as ADVISE_TASK
from tunewise.decide.vocabulary import kind_of


def advised(base: str, task: str) -> tuple[str, str]:
    """(method advise prefers, its first reason) for this task on this base, on this CPU."""
    from tunewise.advise.engine import AdviseInput, advise

    a = advise(AdviseInput(task=ADVISE_TASK[task], model=base, device="cpu"))
    reason = a.reasons[0]["reason"] if a.reasons else a.decision
    return a.preferred, reason


def measured_rows(r: Reader, task: str) -> dict[str, dict] | None:
    """compare's rows for LoRA and full: seed-0 runs, with the score averaged over the seeds that finished."""
    rows = {}
    for method in ("lora", "full"):
        res = r.result_of(Run(task, method))
        if res is None:
            return None
        s = res["summary"]
        rows[method] = CompareRow(method, mean(r.scores(task, method)), res["eval"]["primary"],
                                  peak_rss_mb=s["peak_rss_mb"], train_time_s=s["train_time_s"],
                                  intruders=r.intruders(res))
    return rows


def advice_section(base: str, r: Reader) -> str:
    lines = ["| task | `advise` (rules, before training) | measured LoRA / full | `compare`'s verdict on the "
             "measurement | agree? |", "|---|---|---|---|---|"]
    disagreements = []
    for task in HEADLINE_TASKS:
        preferred, reason = advised(base, task)
        rows = measured_rows(r, task)
        if rows is None:
            lines.append(f"| {task} | {preferred}: {reason} | not measured yet | | |")
            continue
        items = {m: [x for x in r.items(task, m) if x is not None] for m in ("lora", "full")}
        # each seed's test set is its own: pool the seeds' examples (paired within each seed), as claims 1-3 do
        records = {m: [[{"value": n / d if d else 1.0} for seed in runs for n, d in seed]]
                   for m, runs in items.items() if runs and len(runs) == len(items["lora"])}
        v = verdict(rows, kind_of(task), r.base_score(task), records=records or None)
        agree = (preferred in ("lora", "qlora")) == (v["recommendation"] in ("lora", "qlora"))
        lines.append(f"| {task} | {preferred}: {reason} | {rows['lora'].score:.3f} / {rows['full'].score:.3f} "
                     f"| {v['recommendation']}: {v['lines'][0]} | {'yes' if agree else '**no**'} |")
        if not agree:
            disagreements.append(f"- **{task}**: the rules say {preferred}, the measurement says "
                                 f"{v['recommendation']} ({v['lines'][0]})")
    tail = "\n".join(disagreements) if disagreements else "No disagreement among the tasks measured so far."
    return ("## What tunewise would have advised, against what was measured\n\n" + "\n".join(lines) +
            "\n\nWhere they disagree:\n\n" + tail)
