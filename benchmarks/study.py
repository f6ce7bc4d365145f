"""The seed's claims measured on a real base (issues 15, 40): runs the plan, reuses finished steps, writes STUDY.md.

    python benchmarks/study.py --base smollm2 --dry-run     # the plan: steps, expected bands, estimated time
    python benchmarks/study.py --base smollm2               # the first pass (claims 1-3, 5, 9 at +-5 points)
    python benchmarks/study.py --base smollm2 --claims 10   # then a later pass (10, 11, or 4,6,7,8; or all)
    python benchmarks/study.py --base smollm2 --minutes 90  # start no new step after 90 minutes (resume later)
    python benchmarks/study.py --base smollm2 --report      # only rewrite STUDY.md from the stored results
    python benchmarks/study.py --base smollm2 --scorer my_metric:score  # your metric in every eval it runs

Every finished step's small result is stored in benchmarks/study-results/<base>/<run id>.json (committed: a new
session, even on a fresh machine, resumes from it and `--report` needs nothing else); its run folder, with the
checkpoint, is runs/study-<base>/runs/<run id>/ (not committed). A step whose stored settings match is never run
again; a training whose settings match but whose test set was smaller is scored again on the larger one, not
retrained, while its run folder is on this machine. Once complete, `--report` reproduces STUDY.md byte for byte.

With --scorer (a built-in name or your own MODULE:FUNCTION, as `tunewise eval --scorer` takes it) every eval of
the study scores with it instead of each task's own scorer (the continual runs keep their tasks' scorers:
`tunewise continual` takes no scorer). A study folder holds one scorer's results: the default --out is then
runs/study-<base>-<scorer>, its results are stored in study-results/<base>-<scorer>, and STUDY.md is written
into --out, not over benchmarks/STUDY.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_dryrun import describe, estimate_s, print_plan, status  # noqa: E402
from study_exec import execute, rescorable, rescore, run_seconds, sweep_loss_of  # noqa: E402
from study_plan import ALL_CLAIMS, FIRST_PASS, Step, plan  # noqa: E402
from study_store import ROOT, default_store, load_results, save_result  # noqa: E402


def next_step(results: dict[str, dict], claims: tuple[int, ...] = FIRST_PASS) -> Step | None:
    """The first unfinished step that can run, in plan order (the plan grows while the sweep extends itself)."""
    for _, step in plan(sweep_loss_of(results), claims):
        step, done, ready = status(step, results)
        if ready and done is None:
            return step
    return None


def run_plan(base: str, out: Path, store: Path, minutes: float | None, scorer: str | None = None,
             claims: tuple[int, ...] = FIRST_PASS) -> dict[str, dict]:
    """Run the missing steps of these claims one by one (finished ones are never run again; a training only
    scored on a smaller test set is re-scored); stop starting new ones after `minutes`. `scorer` scores every
    eval (None: each task's own)."""
    results, t0 = load_results(out, store), time.time()
    while (step := next_step(results, claims)) is not None and not (minutes and time.time() - t0 > 60 * minutes):
        old = rescorable(step, results, out)
        print(f"{'re-scoring' if old else 'running'}: {describe(step)} (~{estimate_s(step, results) / 60:.0f} min) ...",
              flush=True)
        res = rescore(step, old, base, out, ROOT, scorer) if old else execute(step, base, out, ROOT, scorer)
        save_result(res, out, store)
        results[res["id"]] = res
        print(f"     took {run_seconds(res):.0f} s (load {res['load_before']} -> {res['load_after']})",
              flush=True)
    return results


def parse_claims(text: str) -> tuple[int, ...]:
    """`--claims`: 'all', or claim numbers separated by commas."""
    if text == "all":
        return ALL_CLAIMS
    try:
        claims = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        claims = ()
    if not claims or not set(claims) <= set(ALL_CLAIMS):
        raise argparse.ArgumentTypeError(f"'{text}': give claim numbers 1-{ALL_CLAIMS[-1]} separated by commas, "
                                         "or 'all'")
    return claims


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="smollm2")
    p.add_argument("--out", type=Path, default=None, help="default: runs/study-BASE (run folders, not committed)")
    p.add_argument("--results", type=Path, default=None, help="where each finished step's result is stored "
                   "(default: benchmarks/study-results/BASE, committed)")
    p.add_argument("--claims", type=parse_claims, default=FIRST_PASS, help="the claims whose steps run and are "
                   f"planned: numbers like 10 or 4,6,7,8, or all (default: the first pass, "
                   f"{','.join(map(str, FIRST_PASS))}); the report covers every claim whatever this says")
    p.add_argument("--dry-run", action="store_true", help="print the plan with each step's expected band and time; "
                   "run nothing")
    p.add_argument("--minutes", type=float, default=None, help="start no new run after this many minutes")
    p.add_argument("--report", action="store_true", help="only write STUDY.md from the stored results")
    p.add_argument("--scorer", default=None, help="score every eval with this (a built-in scorer or your own "
                   "MODULE:FUNCTION) instead of each task's own")
    a = p.parse_args()
    tag = slug(a.scorer) if a.scorer else None
    out = a.out or ROOT / "runs" / (f"study-{a.base}" + (f"-{tag}" if tag else ""))
    store = a.results or default_store(a.base, tag)
    check_study_scorer(p, out, store, a.scorer)
    if a.report or a.dry_run:
        results = load_results(out, store)
    else:
        results = run_plan(a.base, out, store, a.minutes, a.scorer, a.claims)
    print_plan(results, a.claims)
    if not a.dry_run:
        from study_report import write_study

        # advise cites the smollm2 study scored by the tasks' own scorers, nothing else
        evidence = ROOT / "tunewise" / "advise" / "study_measured.json" if (a.base, a.scorer) == ("smollm2", None) \
            else None
        print(f"wrote {write_study(a.base, results, ROOT, out, a.scorer, evidence)}")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def check_study_scorer(p: argparse.ArgumentParser, out: Path, store: Path, scorer: str | None) -> None:
    """Refuse, before any run, a scorer that cannot be loaded, or a study folder scored with another one (its
    finished runs would be reused with scores of a different metric)."""
    from tunewise.errors import TunewiseError
    from tunewise.tasks.scorers import check_scorer

    if scorer:
        try:
            check_scorer(scorer)
        except TunewiseError as e:
            p.error(f"--scorer {scorer}: {e}")
    other = sorted({str(r.get("scorer")) for r in load_results(out, store).values()} - {str(scorer)})
    if other:
        wanted = scorer or "each task's own"
        p.error(f"{out} holds runs scored with {', '.join(other)} ('None' = each task's own scorer), not with "
                f"{wanted}: give --out a folder of its own for this scorer")


if __name__ == "__main__":
    main()
