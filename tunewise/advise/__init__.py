"""`tunewise advise`: the decision framework. rules.py is the table of conditions -> verdicts; engine.py applies
it, checks memory with tunewise.estimate, and writes hyperparameters, data advice, a plan and a RunConfig."""

from tunewise.advise.engine import Advice, AdviseInput, AdviseInputError, advise, canonical_task, check

__all__ = ["Advice", "AdviseInput", "AdviseInputError", "advise", "canonical_task", "check"]
