"""Moved to tunewise.generate.sampling (the one generation engine); kept so serve's imports stay stable."""

from tunewise.generate.sampling import (
    GREEDY_BELOW,
    SamplingParams,
    TokenChoice,
    biased,
    choose,
    draw,
    filter_logits,
    make_generator,
)

__all__ = ["GREEDY_BELOW", "SamplingParams", "TokenChoice", "biased", "choose", "draw", "filter_logits",
           "make_generator"]
