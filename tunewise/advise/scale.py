"""Which evidence is nearest the user's model, and what to say when the nearest disagrees with the rule.

A rule's published figure was measured at one scale (Llama 2 7B/13B on GPU); the project's own study measured the
same comparisons on SmolLM2-135M. Where a rule's task comparison has a measurement of ours, advice names the
evidence nearest the user's model size (in log-parameters) and, when that nearest evidence does not confirm the
rule -- our measurement is undecided or contradicts it -- says so and recommends measuring instead of reciting
the far figure as settled. Pure: the tables and numbers in, sentences out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tunewise.advise.evidence import EVIDENCE
from tunewise.advise.study_evidence import Measured, study_evidence

MEASURE = ("measure it on your task before settling: `tunewise pilot` (inside a time budget) or "
           "`tunewise compare --seeds 3 --eval-size 400` (a +-5-point band)")


def measured() -> tuple[Measured, ...]:
    """The study's measurement of each rule it tested (claims 1-3 of benchmarks/STUDY.md, as its report wrote
    them into advise/study_measured.json)."""
    return study_evidence().measured


def measured_quality() -> str | None:
    """The data advice's measured line: what the study's claim 11 found of curated against noisy data at 135M
    (LIMA's figure is from a 65B model), and the command that makes a curated subset; None until it is measured."""
    ours = next((m for m in measured() if m.rule == "data-quality"), None)
    if ours is None:
        return None
    return (f"Quality over quantity, measured at 135M ({EVIDENCE[ours.evidence].source}, {ours.study_pass}): "
            f"{ours.figure}: {ours.verdict or ours.call}. `tunewise data select DATA --k N --out FILE` keeps the best and most "
            "varied N records, with the reason for each one left out.")


@dataclass(frozen=True)
class ScaleNote:
    rule: str
    user_params: float
    nearest: str  # evidence id nearest the user's model
    nearest_scale: str
    published: list[str]  # the rule's own evidence ids with a size
    measured: str | None  # our figure, when we have one for this rule
    measured_call: str | None
    text: str
    sets_aside: bool = False  # our measurement is nearest and contradicts the rule: the rule does not vote
    ours_nearest: bool = False  # our measurement, not the published figure, is nearest the user's model

    def as_dict(self) -> dict:
        return asdict(self)


def _distance(evidence_id: str, params: float) -> float:
    sizes = EVIDENCE[evidence_id].params
    return min(abs(math.log10(s) - math.log10(params)) for s in sizes) if sizes else math.inf


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def scale_note(rule_id: str, evidence_ids: tuple[str, ...], params: float) -> ScaleNote | None:
    """The note for one fired rule on a model of `params` parameters; None when we have no measurement of it or
    the rule's evidence has no size."""
    ours = next((m for m in measured() if m.rule == rule_id), None)
    published = [e for e in evidence_ids if EVIDENCE[e].params]
    if ours is None or not published or params <= 0:
        return None
    nearest = min([*published, ours.evidence], key=lambda e: _distance(e, params))
    far = min(published, key=lambda e: _distance(e, params))
    source = EVIDENCE[ours.evidence]
    sets_aside = nearest == ours.evidence and ours.call == "contradicted"
    if sets_aside:
        text = (f"Nearest evidence to your model ({params / 1e6:,.0f}M parameters): {source.source}, "
                f"{ours.study_pass} -- {ours.figure}: contradicted. The published figure ({EVIDENCE[far].scale}, "
                f"{_times(10 ** _distance(far, params))} farther in size) does not hold at this scale, so this rule does "
                f"not vote for your model; {MEASURE}.")
    elif nearest == ours.evidence and ours.call != "holds":
        text = (f"Nearest evidence to your model ({params / 1e6:,.0f}M parameters): {source.source}, "
                f"{ours.study_pass} -- {ours.figure}: {ours.call}, not the published figure ({EVIDENCE[far].scale}: "
                f"{_times(10 ** _distance(far, params))} farther in size). The rule's published figure may not hold at "
                f"your scale; {MEASURE}.")
    elif nearest == ours.evidence:
        text = (f"Nearest evidence to your model: {source.source}, {ours.study_pass} -- {ours.figure}: it holds "
                "there too.")
    else:
        text = (f"Nearest evidence to your model ({params / 1e9:,.1f}B parameters): {EVIDENCE[nearest].source} "
                f"({EVIDENCE[nearest].scale}); our own measurement at 135M ({ours.figure}) is farther.")
    return ScaleNote(rule_id, params, nearest, EVIDENCE[nearest].scale, published, ours.figure, ours.call, text,
                     sets_aside=sets_aside, ours_nearest=nearest == ours.evidence)
