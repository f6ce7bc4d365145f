"""The project's own study as advise's evidence, read from `study_measured.json` beside this file.

That file is written by `python benchmarks/study.py --base smollm2 --report` from the study's stored results
(benchmarks/study-results/smollm2/), never typed by hand: each rule's entry is the summary row of the claim it
rests on in benchmarks/STUDY.md (what was measured, the gap with its band, the call), so a test can pin every
figure advise cites to the page it comes from. A claim the re-run has not measured yet (every seed) keeps the first
pass's row (40 test examples; benchmarks/study_first_pass.md), marked as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tunewise.errors import TunewiseError

PATH = Path(__file__).with_name("study_measured.json")
CALLS = ("holds", "contradicted", "undecided")


@dataclass(frozen=True)
class Measured:
    """One of our measurements of a rule's comparison: which rule, the evidence entry, what it found, its call."""

    rule: str
    evidence: str
    claim: int
    measured: str  # the summary row's "measured" cell, verbatim
    band: str  # its "gap with its band" cell, verbatim
    call: str  # holds | contradicted | undecided (tunewise.decide's outcomes, as the study words them)
    study_pass: str  # "first pass (40 test examples)" or "the re-run (3 seeds x 200 test examples)"
    difference: str = "full - LoRA"  # what the band's gaps are; "" where the band cell names its own (claim 7)
    verdict: str = ""  # the row's verdict cell verbatim, where `call` reads only a part of it (claims 7 and 11)

    @property
    def figure(self) -> str:
        if self.band == "-":
            return self.measured
        return f"{self.measured}; {self.difference} {self.band}" if self.difference else f"{self.measured}; {self.band}"


@dataclass(frozen=True)
class StudyEvidence:
    id: str
    source: str
    finding: str
    scale: str
    params: tuple[float, ...]
    measured: tuple[Measured, ...]


@cache
def study_evidence(path: Path = PATH) -> StudyEvidence:
    try:
        raw = json.loads(path.read_text())
        entries = tuple(Measured(**e) for e in raw["measured"])
        evidence = StudyEvidence(raw["id"], raw["source"], raw["finding"], raw["scale"], tuple(raw["params"]),
                                 entries)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TunewiseError(f"{path}: cannot read the study's evidence ({e})",
                            "rewrite it with `python benchmarks/study.py --base smollm2 --report`") from e
    bad = [m.call for m in entries if m.call not in CALLS]
    if bad:
        raise TunewiseError(f"{path}: field 'call' is {bad[0]!r}, not one of {', '.join(CALLS)}",
                            "rewrite it with `python benchmarks/study.py --base smollm2 --report`")
    return evidence
