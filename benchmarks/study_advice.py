"""What tunewise would have told a user before the study, against what the study measured, task by task.

`tunewise advise` answers from the rule table before any training; `tunewise compare`'s verdict answers from
measured rows. Where the rule and the measurement disagree, the section says so: that is the evidence for
changing a rule.
"""

from __future__ import annotations

from pathlib import Path

from study_claims import Reader, call_of, mean
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
        # the call claims 1-3 make: each seed's test set is its own, so the seeds are replicates
        call = call_of(r, task, kind_of(task))
        recommendation, words = (call.recommendation, call.sentence) if call else \
            (verdict(rows, kind_of(task), r.base_score(task))["recommendation"], "no per-example scores: undecided")
        agree = (preferred in ("lora", "qlora")) == (recommendation in ("lora", "qlora"))
        lines.append(f"| {task} | {preferred}: {reason} | {rows['lora'].score:.3f} / {rows['full'].score:.3f} "
                     f"| {recommendation}: {words} | {'yes' if agree else '**no**'} |")
        if not agree:
            disagreements.append(f"- **{task}**: the rules say {preferred}, the measurement says "
                                 f"{recommendation} ({words})")
    tail = "\n".join(disagreements) if disagreements else "No disagreement among the tasks measured so far."
    return ("## What tunewise would have advised, against what was measured\n\n" + "\n".join(lines) +
            "\n\nWhere they disagree:\n\n" + tail)


# advise's rules that rest on a claim of the study (tunewise/advise/rules.py ids)
RULE_OF_CLAIM = {1: "representation-task", 2: "sql-task", 3: "reasoning-task", 7: "continual-pipeline",
                 11: "data-quality"}  # 11: not a voting rule, advise's data advice (LIMA's quality over quantity)
FIRST_PASS_CLAIMS = (1, 2, 3)  # the rules advise cited from the first pass before the re-run measured them
EVIDENCE_ID = "study-smollm2"
FORGETS_FASTER = "LoRA forgets earlier tasks faster: "


def call_word(holds: str) -> str:
    return "holds" if holds == "holds" else "contradicted" if holds.startswith("contradicted") else "undecided"


def rule_call(claim: int, holds: str) -> str:
    """The call on what the rule recommends by, where a verdict judges more than that. Claim 7's has two halves
    (intruders pile up; LoRA forgets earlier tasks faster): the continual rule prefers full fine-tuning for the
    second, so its "yes on ..." holds (tasks left undecided are named beside it), "no" contradicts. Claim 11's data
    advice rests on "curated beats noisy", per method: it holds only where both methods say yes with no task
    undecided, is contradicted where one says no, else undecided."""
    if claim == 11:  # the data advice's claim: curated N beats the noisy 5N, for each method
        parts = [part.split(": ", 1)[1] for part in holds.split("; ") if " curated beats noisy: " in part]
        return "holds" if parts and all(p.startswith("yes") and "undecided" not in p for p in parts) else \
            "contradicted" if any(p.startswith("no") for p in parts) else "undecided"
    if claim != 7:
        return call_word(holds)
    faster = holds.rpartition(FORGETS_FASTER)[2]
    return "holds" if faster.startswith("yes") else "contradicted" if faster.startswith("no") else "undecided"


def study_pass(claim: int) -> str:
    from study_plan import CURATED_N, CURATED_SEEDS, EVAL_SIZE, SEEDS

    if claim == 11:
        return (f"the curated-data runs ({len(CURATED_SEEDS)} seeds x {EVAL_SIZE} test examples; {CURATED_N} curated "
                f"or random records x 5 epochs against the {5 * CURATED_N} noisy ones x 1)")
    if claim == 7:  # `tunewise continual`: one training seed, every task scored after every stage
        return f"the continual run (one seed, {EVAL_SIZE} test examples per task after each stage)"
    return f"the re-run ({len(SEEDS)} seeds x {EVAL_SIZE} test examples)"


FIRST_PASS_ROWS = "the first pass (40 test examples, 2 seeds)"


def first_pass_entries(page: Path) -> dict[str, dict]:
    """Each rule's entry from the first pass's summary row (benchmarks/study_first_pass.md), as it was written."""
    entries = {}
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit() and int(cells[0]) in FIRST_PASS_CLAIMS:
            n = int(cells[0])
            entries[RULE_OF_CLAIM[n]] = {"rule": RULE_OF_CLAIM[n], "evidence": EVIDENCE_ID, "claim": n,
                                         "measured": cells[3], "band": cells[4], "call": call_word(cells[5]),
                                         "study_pass": FIRST_PASS_ROWS}
    return entries


def evidence_entries(r: Reader, first_pass: Path) -> list[dict]:
    """advise's entry per rule: the claim's summary row where the re-run measured it (every seed in), else the first
    pass's row."""
    from study_claims import CLAIMS, LATER

    by_rule = first_pass_entries(first_pass)
    for claim in CLAIMS:
        rule = RULE_OF_CLAIM.get(claim.number)
        measured, holds = claim.verdict(r)
        if rule is None or measured.startswith(("not yet", LATER[0])) or holds.startswith("provisional"):
            continue  # the first pass's row stands until every seed finished
        by_rule[rule] = {"rule": rule, "evidence": EVIDENCE_ID, "claim": claim.number, "measured": measured,
                         "band": claim.band(r), "call": rule_call(claim.number, holds),
                         "study_pass": study_pass(claim.number)}
        if claim.number in (7, 11):  # their band cells name their own differences; the call reads part of the verdict
            by_rule[rule] |= {"difference": "", "verdict": holds}
    return [by_rule[rule] for rule in RULE_OF_CLAIM.values() if rule in by_rule]


def write_evidence(r: Reader, path: Path, first_pass: Path) -> Path:
    """tunewise/advise/study_measured.json from the study's results (and the first pass's page for the claims
    not re-measured): what `tunewise advise` cites at 135M."""
    from tunewise.advise.study_evidence import Measured
    from tunewise.fileio import atomic_write_json

    entries = evidence_entries(r, first_pass)
    passes = sorted({e["study_pass"] for e in entries})
    finding = "; ".join(f"claim {e['claim']}, {e['study_pass']}: {Measured(**e).figure}: {e['call']}"
                        for e in entries)
    atomic_write_json(path, {
        "id": EVIDENCE_ID, "source": "tunewise's own study (benchmarks/STUDY.md), SmolLM2-135M-Instruct",
        "finding": finding, "params": [135e6],
        "scale": "SmolLM2-135M-Instruct, CPU fp32, 240 examples x 1 epoch where a row does not say otherwise; "
                 "rows from " + " and ".join(passes),
        "measured": entries})
    return path
