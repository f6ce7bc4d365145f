"""A measured gap -> one of five calls, the method to use now, and the words.

The call compares two methods, the cheaper one first (LoRA or QLoRA, then full fine-tuning): the costlier one is
called better only when its whole band clears the tie margin, the cheaper one when the band lies beyond the margin
the other way, a tie when the band sits inside the margin, and undecided otherwise -- with what would decide it,
and the cheaper method to use meanwhile (the seed's "start with LoRA").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunewise.decide.band import Band
from tunewise.decide.margins import GRADUATE_POINTS, RESOLUTION_POINTS, TIE_POINTS

NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}
CALLS = ("lora", "qlora", "full", "tie", "undecided")


def name(method: str) -> str:
    return NAMES.get(method, method)


@dataclass(frozen=True)
class Call:
    call: str  # lora | qlora | full | tie | undecided
    recommendation: str  # the method to use now
    cheaper: str
    costlier: str
    kind: str
    gap_points: float  # costlier - cheaper
    band_points: tuple[float, float]
    examples: int
    seeds: int  # the fewer of the two methods' seeds
    needed_examples: int | None  # for a +-resolution_points band (None: seeds, not examples, are short)
    needed_seeds: int | None
    resolution_points: float
    tie_points: float
    sentence: str

    @property
    def decided(self) -> bool:
        return self.call != "undecided"

    def as_dict(self) -> dict:
        return asdict(self) | {"band_points": list(self.band_points)}


def outcome(low: float, high: float, cheaper: str = "lora", costlier: str = "full",
            tie_points: float = TIE_POINTS) -> str:
    """The call from a band on costlier - cheaper, in points: a method only when the whole band clears the tie
    margin its way, a tie only when the whole band lies inside it."""
    if low > tie_points:
        return costlier
    if high < -tie_points:
        return cheaper
    if low >= -tie_points and high <= tie_points:
        return "tie"
    return "undecided"


def make_call(band: Band, cheaper: str = "lora", costlier: str = "full", kind: str = "other",
              tie_points: float = TIE_POINTS) -> Call:
    gap, low, high = band.points()
    call = outcome(low, high, cheaper, costlier, tie_points)
    resolution = RESOLUTION_POINTS if band.half_width * 100 > RESOLUTION_POINTS else tie_points
    # the seed: graduate where reasoning gaps remain after tuning (a gap beyond the band and the tie margin, of more
    # than GRADUATE_POINTS); elsewhere a clear gap asks for tuning the adapter first
    graduate = call == costlier == "full" and kind == "reasoning" and gap > GRADUATE_POINTS
    recommendation = costlier if graduate else cheaper
    seeds = min(band.seeds)
    needed_examples, needed_seeds = band.needed_examples(resolution), band.needed_seeds(resolution)
    head = (f"{name(costlier)} - {name(cheaper)} {gap:+.1f} points [{low:+.1f}, {high:+.1f}] on {band.examples} "
            f"examples, {seeds} seed{'s' if seeds != 1 else ''}")
    tail = _outcome(call, cheaper, costlier, kind, tie_points, graduate)
    if call == "undecided":
        tail += _what_decides(resolution, needed_examples, needed_seeds, band, cheaper)
    return Call(call, recommendation, cheaper, costlier, kind, round(gap, 2), (round(low, 2), round(high, 2)),
                band.examples, seeds, needed_examples, needed_seeds, resolution, tie_points, f"{head}: {tail}")


def _outcome(call: str, cheaper: str, costlier: str, kind: str, tie: float, graduate: bool) -> str:
    if call == "tie":
        return f"a tie within the {tie:g}-point margin; keep {name(cheaper)} (cheaper)"
    if call == cheaper:
        return f"{name(cheaper)} is better beyond the {tie:g}-point margin; keep {name(cheaper)}"
    if call == costlier and graduate:
        return f"{name(costlier)} is better beyond the band on a reasoning task: graduate to {name(costlier)}"
    if call == costlier:
        return (f"{name(costlier)} is better beyond the {tie:g}-point margin on a {kind} task; tune "
                f"{name(cheaper)} first (rank 32, alpha = 2r, an lr sweep) and graduate if the gap stays")
    return "undecided"


def _what_decides(resolution: float, examples: int | None, seeds: int | None, band: Band, cheaper: str) -> str:
    parts = []
    if examples is not None:
        parts.append(f"a +-{resolution:g}-point call needs about {examples} examples")
    else:
        parts.append(f"the seeds alone spread the gap by +-{100 * band.half_width_seeds:.1f} points: a "
                     f"+-{resolution:g}-point call needs about {seeds} seeds per method")
    if min(band.seeds) < 2:
        parts.append("the seed-to-seed spread is not in this band (compare --seeds 3 measures it)")
    return "; " + "; ".join(parts) + f"; meanwhile keep {name(cheaper)} (cheaper)"
