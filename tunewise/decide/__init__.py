"""The call: LoRA, QLoRA, full fine-tuning, a tie, or undecided -- made in one place.

compare, the pilot, continual, the HTML report and the study ask this package; nothing else holds a margin or
computes a verdict. `vocabulary` names the tasks and their kinds, `margins` the points that change a call,
`band` measures a gap between two methods with its band (a paired bootstrap over the examples both answered and
over training seeds), `replicates` when each seed has its own test set, and `call` turns a measured gap into one
of the outcomes and its words. Pure: numbers in, typed results and sentences out; no torch, no files.
"""

from tunewise.decide.band import Band, Scores, item_pair, measure_gap, scores_from_records
from tunewise.decide.call import Call, make_call
from tunewise.decide.margins import GRADUATE_POINTS, MARGINS, RESOLUTION_POINTS, TIE_POINTS
from tunewise.decide.replicates import measure_replicated_gap

__all__ = ["Band", "Call", "GRADUATE_POINTS", "MARGINS", "RESOLUTION_POINTS", "Scores", "TIE_POINTS", "item_pair",
           "make_call", "measure_gap", "measure_replicated_gap", "scores_from_records"]
