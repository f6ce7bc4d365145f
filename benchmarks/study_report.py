"""STUDY.md from the study's finished runs: one section per claim, the summary table, the figures, every run.

Pure reading: nothing is trained here and nothing depends on the clock, so the same results give the same bytes.
A claim whose runs are not all finished says so ("not measured yet") instead of guessing.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from study_advice import advice_section, write_evidence
from study_claims import CLAIMS, Reader
from study_compare import write_compare_reports
from study_exec import run_seconds
from study_figures import draw_figures
from study_plan import EVAL_SIZE, FIRST_PASS, SEEDS, plan

from tunewise.fileio import atomic_write_text


def fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mean_spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {(max(xs) - min(xs)) / 2:.3f}"


def header(base: str, r: Reader, scorer: str | None = None) -> str:
    steps = plan()
    finished = [res for _, _, res in finished_steps(r)]
    done = sum(1 for _, s in steps if r.result_of(s) is not None)
    hours = sum(run_seconds(res) for res in finished) / 3600
    loads = [res["load_before"] for res in finished]
    load = f"load average {min(loads):.1f}-{max(loads):.1f} at the runs' starts" if loads else "no runs yet"
    first = ",".join(map(str, FIRST_PASS))
    return f"""# The seed's claims, measured on `{base}`

Produced by `python benchmarks/study.py --base {base}{f" --scorer {scorer}" if scorer else ""}` (the plan, with each step's expected band and time:
`--dry-run`). {done} of {len(steps)} planned steps are finished ({hours:.1f} h of run time on 2 CPU cores, fp32, {load}).
The first pass runs claims {first} at ±5 points; the rest follows with `--claims 10`, `--claims 11` and
`--claims 4,6,7,8` (cut breadth, not resolution). Each finished step's result is stored in
`benchmarks/study-results/{base}/`, and this page is rendered from those files alone: running the same command again
continues where the study stopped, and `--report` rewrites it byte for byte.

Budget of every run unless its row says otherwise: 240 training examples of a built-in task, 1 epoch, batch 8
(30 optimizer steps), max_seq_len 160, tasks written as chat (the base's chat template); scored greedily on
{EVAL_SIZE} test examples per seed with {f"`{scorer}` (the continual runs: each task's scorer)" if scorer else "the task's scorer"}, {len(SEEDS)} seeds (each its own data and test set); LoRA on all
linear layers, r 16, alpha = r, dropout 0; each method at the lr its sweep picked (claim 9); retention probes
`knowledge`, `follows` and `kl` before and after (seed 0); intruder dimensions by `tunewise analyze` (top-10
singular vectors, eps 0.3 / 0.5 / 0.7). A gap is judged by `tunewise.decide`: within a seed both methods answer
the same test examples (paired); each seed is a replicate, and the 95% band adds how much more the seeds' gaps
scatter than their test sets explain (`tunewise/decide/replicates.py`). A claim holds or is contradicted only when
every seed of its tasks finished and the band clears the 2-point tie margin. Scores over seeds are shown as mean ±
half the range.
"""


def summary_table(base: str, r: Reader) -> str:
    lines = [f"| # | claim | published figure | measured on {base} | gap with its 95% band | holds? |",
             "|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        measured, holds = claim.verdict(r)
        lines.append(f"| {claim.number} | {claim.title} | {claim.published} | {measured} | {claim.band(r)} | "
                     f"{holds} |")
    return "\n".join(lines) + ("\n\nClaims 1-3 band full - LoRA; claim 10 its four comparisons; claim 11 curated "
                               "N against the noisy 5N and a random N. The first pass's rows (40 test examples, one or "
                               "two seeds, every gap of claims 1-3 undecided) are in its section at the end, as written.")


def runs_table(r: Reader) -> str:
    lines = ["| run | claims | seed | budget | wall s | peak RSS MB | score (metric) | untuned | retention | "
             "intruders 0.3/0.5/0.7 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for claims, step, res in finished_steps(r):
        if step.kind != "train":
            continue
        s, ev = res["summary"], res["eval"]
        budget = f"{step.train_size} ex x {step.epochs:g} ep, batch {step.batch_size}, {s['steps']} steps, {s['tokens']:,} tok"
        untuned = r.base_score(step.task, step.seed)
        intr = "/".join(str(v) for v in res["analysis"]["total"].values()) if "analysis" in res else "-"
        lines.append(f"| `{res['id']}` | {','.join(map(str, claims))} | {step.seed} | {budget} | "
                     f"{run_seconds(res):.0f}{' *' if res.get('paused_s') else ''} | {s['peak_rss_mb']:,.0f} | {fmt(ev['score'])} ({ev['primary']}) | "
                     f"{fmt(untuned)} | {r.retention_text(res)} | {intr} |")
    if any(res.get("paused_s") for _, _, res in finished_steps(r)):
        lines.append("\n\\* stopped (SIGSTOP) for part of its run while the machine measured training or serving "
                     "speed for another issue; the wall time shown leaves that pause out (`paused_s` in its "
                     "result.json).")
    return "\n".join(lines)


def finished_steps(r: Reader) -> list[tuple[tuple[int, ...], object, dict]]:
    """(claims, step, result) per finished run, once each: a sweep run that is also a headline run answers both."""
    by_id: dict[str, tuple[set[int], object, dict]] = {}
    for claims, step in plan():
        res = r.result_of(step)
        if res is not None:
            by_id.setdefault(res["id"], (set(), step, res))[0].update(claims)
    return [(tuple(sorted(c)), step, res) for c, step, res in by_id.values()]


def commands(r: Reader) -> str:
    out = []
    for _, _, res in finished_steps(r):
        out.append(f"`{res['id']}`:\n\n" + "\n".join(f"    {c}" for c in res["commands"]))
    return "\n\n".join(out) or "(no run finished yet)"


def gap_link(number: int, figures: list[str]) -> str:
    """The claim's gap figure under its section, where it is drawn."""
    name = f"claim{number}_gaps.png"
    return f"\n\n![claim {number}: each gap with its band](study_figures/{name})" if name in figures else ""


def write_study(base: str, results: dict[str, dict], root: Path, out: Path, scorer: str | None = None,
                evidence: Path | None = None) -> Path:
    """STUDY.md and its figures: benchmarks/ for the tasks' own scorers, the study folder `out` for another
    scorer's (the repository's STUDY.md stays the tasks' measurement); and, given `evidence`, advise's
    study_measured.json from the same rows."""
    r = Reader(results)
    if evidence is not None:
        write_evidence(r, evidence, root / "benchmarks" / "study_first_pass.md")
    home = out if scorer else root / "benchmarks"
    figures = draw_figures(r, home / "study_figures")
    reports = [p.relative_to(root) if p.is_relative_to(root) else p for p in write_compare_reports(r, base, out)]
    sections = "\n\n".join(claim.section(r) + gap_link(claim.number, figures) for claim in CLAIMS)
    tiny = (root / "benchmarks" / "study_tiny.md").read_text().replace("# A small study", "## The tiny base: a small study", 1)
    first = (root / "benchmarks" / "study_first_pass.md").read_text().replace("# The first pass", "## The first pass", 1)
    text = "\n\n".join([
        header(base, r, scorer), "## Summary\n\n" + summary_table(base, r), sections, advice_section(base, r),
        "## Figures\n\n" + "\n\n".join(f"![{name}](study_figures/{name})" for name in figures) +
        "\n\nEach headline task as `tunewise compare` reports it (loss curves, cost, intruders per layer, retention; "
        "written by the study command, not kept in git):\n\n" + "\n".join(f"- `{p}`" for p in reports),
        "## Every training run\n\n" + runs_table(r), "## Commands of every run\n\n" + commands(r), first.rstrip(),
        "# Small-scale reference\n\nThe study as it ran on the shipped 5M tiny base (`python benchmarks/study_tiny.py`), "
        "kept as the reference for what changes with a real pretrained model.\n\n" + tiny.replace("\n# ", "\n## ")])
    path = home / "STUDY.md"
    atomic_write_text(path, text.rstrip() + "\n")
    return path

