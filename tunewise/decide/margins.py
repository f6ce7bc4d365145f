"""The points that change a call, in one place (percentage points of the task's headline metric)."""

from __future__ import annotations

from dataclasses import dataclass

TIE_POINTS = 2.0  # the seed's representation gap (95% vs 97%): smaller is a tie, and the adapter is cheaper
GRADUATE_POINTS = 5.0  # a gap this large on reasoning, beyond its band: graduate to full fine-tuning
RESOLUTION_POINTS = 5.0  # the band an undecided call asks for: "a +-5-point call needs about N examples"
CONFIDENCE = 0.95  # every band is a 95% band


@dataclass(frozen=True)
class Margins:
    """The margins as one typed value, for the callers that show or pass them on (the report, the pilot)."""

    tie: float = TIE_POINTS
    graduate: float = GRADUATE_POINTS
    resolution: float = RESOLUTION_POINTS


MARGINS = Margins()
