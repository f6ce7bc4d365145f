"""The pilot's call: measured learning curves against the rule table and the memory fit (pure: numbers in,
sentences out).

Order of evidence: memory first (a method that does not fit cannot win), then the measurement when it separates
the methods beyond its uncertainty band, else the rule table. When a conclusive measurement disagrees with the rule
table, the measurement wins and the verdict says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunewise.advise.resolution import PairedGap
from tunewise.decide.call import NAMES, outcome
from tunewise.decide.margins import MARGINS


@dataclass
class Prediction:
    method: str
    score: float  # predicted at the full data size
    low: float
    high: float
    measured_best: float  # the best score the pilot actually measured
    memory_gib: float | None = None  # the estimate for the user's hardware plan
    fits: bool = True


@dataclass
class PilotVerdict:
    recommendation: str | None
    evidence: str  # "measured" | "rule" | "memory"
    rule_preferred: str
    contradicts_rules: bool
    lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self) | {"text": " ".join(self.lines)}


def decide(preds: dict[str, Prediction], rule_preferred: str, rule_reasons: list[str], base_score: float | None = None,
           tie_points: float = MARGINS.tie, paired: PairedGap | None = None, n_full: int | None = None) -> PilotVerdict:
    """The recommendation and why, the gap judged by its band (gap_band). `paired` at a smaller slice than the
    full data only adds the resolution line (how many examples a sharper call would need)."""
    adapter = preds.get("lora") or preds.get("qlora")
    full = preds.get("full")
    rules_say = f"the rule table prefers {NAMES.get(rule_preferred, rule_preferred)}" + (
        f" ({'; '.join(rule_reasons[:2])})" if rule_reasons else "")
    lines: list[str] = []
    if not preds:
        return PilotVerdict(rule_preferred, "rule", rule_preferred, False,
                            [f"Nothing was measured inside the budget; {rules_say}."])
    if not adapter or not full:
        only = adapter or full
        return PilotVerdict(rule_preferred, "rule", rule_preferred, False,
                            [f"Only {NAMES.get(only.method, only.method)} was measured inside the budget: nothing to "
                             f"compare, so the rule table decides: {rules_say}."])
    a_name = NAMES[adapter.method]
    if not full.fits and adapter.fits:
        lines.append(f"Full fine-tuning does not fit the memory plan ({full.memory_gib:.1f} GiB estimated): "
                     f"{a_name}, whatever the measurement says.")
        return PilotVerdict(adapter.method, "memory", rule_preferred, False, lines + [rules_say[0].upper() +
                                                                                    rules_say[1:] + "."])
    mem = (f" at {adapter.memory_gib / full.memory_gib:.0%} of the memory"
           if adapter.memory_gib and full.memory_gib else "")
    at_full, gap, low, high, bands = gap_band(adapter, full, paired, n_full)
    learned = max(adapter.measured_best, full.measured_best)
    if base_score is not None and learned <= base_score + 1e-9:
        measured = None
        lines.append(f"Neither method beat the untuned base ({base_score:.3f}) in the pilot: the measurement says "
                     f"nothing yet ({bands}).")
    elif (call := outcome(low, high, adapter.method, "full", tie_points)) == "full":
        measured = "full"
        lines.append(f"Measured: full fine-tuning leads by {gap:.1f} points beyond the uncertainty ({bands}).")
    elif call == adapter.method:
        measured = adapter.method
        lines.append(f"Measured: {a_name} leads by {-gap:.1f} points{mem} ({bands}).")
    elif call == "tie":
        measured = adapter.method
        lines.append(f"Measured: a tie -- {a_name} within {tie_points:g} points of full fine-tuning{mem}, even at "
                     f"the edges of the bands ({bands}).")
    else:
        measured = None
        lines.append(f"The measurement cannot separate them: the {'measured' if at_full else 'predicted'} gap is "
                     f"{gap:+.1f} points for full, but the bands overlap beyond the {tie_points:g}-point tie margin "
                     f"({bands}).")
    if paired is not None:
        lines.append(resolution_line(paired, tie_points))
    if measured is None:
        lines.append(f"So the rule table decides: {rules_say}.")
        rec = rule_preferred if preds.get(rule_preferred, adapter).fits else adapter.method
        return PilotVerdict(rec, "rule", rule_preferred, False, lines)
    against = (measured == "full") != (rule_preferred == "full")  # LoRA vs QLoRA is not a contradiction
    if not against:
        measured = rule_preferred if measured != "full" and preds.get(rule_preferred, adapter).fits else measured
    if against:
        lines.append(f"This contradicts the rule table ({rules_say}); the measurement on your data wins.")
    else:
        lines.append(f"This agrees with the rule table ({rules_say}).")
    return PilotVerdict(measured, "measured", rule_preferred, against, lines)


def gap_band(adapter: Prediction, full: Prediction, paired: PairedGap | None, n_full: int | None
             ) -> tuple[bool, float, float, float, str]:
    """(measured at the full data?, gap full - adapter, its band's low and high, in points; the sentence that
    describes them): the paired band when both methods were scored after training on all the data, else the span
    between the two learning curves' bands at the full data."""
    a_name = NAMES[adapter.method]
    if paired is not None and n_full is not None and paired.n_train >= n_full:
        gap = 100 * paired.gap
        low, high = (100 * x for x in paired.interval())
        return True, gap, low, high, (f"both trained on all {n_full} examples and scored on the same "
                                      f"{paired.n_eval}: full - {a_name} {gap:+.1f} points, band [{low:+.1f}, "
                                      f"{high:+.1f}]")
    return False, 100 * (full.score - adapter.score), 100 * (full.low - adapter.high), 100 * (full.high - adapter.low), (
        f"predicted at the full data: {a_name} {adapter.score:.3f} [{adapter.low:.3f}, {adapter.high:.3f}], "
        f"full {full.score:.3f} [{full.low:.3f}, {full.high:.3f}]")


def resolution_line(paired: PairedGap, tie_points: float = MARGINS.tie) -> str:
    """How sharp the pilot's scoring is, and what a sharper call would take."""
    width = 100 * paired.half_width
    line = (f"Resolution: on {paired.n_eval} validation examples (the methods differed on {paired.discordant:.0%} of "
            f"them at {paired.n_train} training examples) a gap is known to +-{width:.1f} points")
    if width <= tie_points:
        return line + "."
    five = paired.examples_needed(MARGINS.resolution / 100)
    tie = paired.examples_needed(tie_points / 100)
    return (line + f"; +-{MARGINS.resolution:g} points would need about {five} validation examples, "
            f"+-{tie_points:g} points (the tie margin) about {tie}.")
