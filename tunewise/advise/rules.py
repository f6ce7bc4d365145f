"""The decision framework as one table: condition -> votes for each method, with weights and evidence.

Read each row against the seed ('Making the call' and 'QLoRA: when memory is the constraint'). A rule that fires
adds its weight to a method's score (negative = against it). The highest score is the preferred method; memory
then decides whether it can run (full -> LoRA -> QLoRA fallback, in advise/engine.py). Memory itself is not a
vote here: whether a method fits is computed, not guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tunewise.decide.vocabulary import tasks_of_kind

METHOD_ORDER = ("lora", "full", "qlora")  # tie-break: the seed's "start with LoRA"

TASKS = {  # advise's task names in words (their kinds: decide.vocabulary.ADVISE_TASK_KIND)
    "classification": "classification",
    "structured": "structured output / JSON",
    "style": "style or tone",
    "domain": "domain terminology",
    "sql": "SQL generation",
    "code": "code generation",
    "math": "math reasoning",
    "logic": "logical reasoning",
    "open-ended": "open-ended generation",
}
TASK_ALIASES = {
    "classify": "classification", "cls": "classification", "structured-output": "structured", "json": "structured",
    "structured_output": "structured", "tone": "style", "style-or-tone": "style", "terminology": "domain",
    "domain-terminology": "domain", "math-reasoning": "math", "gsm8k": "math", "logical": "logic",
    "logical-reasoning": "logic", "reasoning": "logic", "open": "open-ended", "open_ended": "open-ended",
    "chat": "open-ended", "general": "open-ended", "text-to-sql": "sql",
}
REPRESENTATION = tasks_of_kind("representation")  # the kinds are tunewise.decide's one task vocabulary
REASONING = tasks_of_kind("reasoning")


@dataclass(frozen=True)
class Facts:
    """What advise knows about the job (the plans are the seed's own conditions)."""

    task: str
    continual: bool = False  # continual / sequential adaptation pipeline
    multi_adapter: bool = False  # several task adapters swapped at runtime
    accuracy_priority: bool = False  # "that final 5-10% of accuracy justifies the compute cost"
    time_bottleneck: bool = False  # training time is the bottleneck
    long_term: bool = False  # train once for long-term deployment
    quantized_inference: bool = False  # quantised inference is planned anyway
    fast_iteration: bool = False  # iterating quickly, faster experiment cycles


@dataclass(frozen=True)
class Rule:
    id: str
    condition: str  # the condition in words, as the seed states it
    when: Callable[[Facts], bool] = field(repr=False)
    votes: dict[str, float]  # method -> weight (+ for, - against)
    reason: str
    evidence: tuple[str, ...]


RULES: list[Rule] = [
    Rule("start-with-lora", "always (the practitioner's rule of thumb)", lambda f: True, {"lora": 1.0},
         "Start with LoRA: it is cheap, and you learn which capabilities need more.", ("seed",)),
    Rule("representation-task", "task is classification, structured output, style or domain terminology",
         lambda f: f.task in REPRESENTATION, {"lora": 2.0},
         "Representation/formatting tasks reuse the model's knowledge; LoRA reached 95% vs 97% for full "
         "fine-tuning, a gap most systems absorb.", ("anyscale-2023",)),
    Rule("sql-task", "task is SQL generation", lambda f: f.task == "sql", {"lora": 1.5},
         "SQL generation: LoRA and full fine-tuning performed about the same.", ("anyscale-2023",)),
    Rule("reasoning-task", "mathematical or logical reasoning is central",
         lambda f: f.task in REASONING, {"full": 2.0, "lora": -0.5, "qlora": -1.0},
         "Reasoning extends what the model can do; LoRA clearly trailed full fine-tuning on GSM8k at 7B/13B, and "
         "QLoRA makes least sense where LoRA already underperforms.", ("anyscale-2023", "biderman-2024")),
    Rule("code-task", "task is code generation", lambda f: f.task == "code", {"full": 1.0},
         "On code, LoRA learns less than full fine-tuning (though it forgets less).", ("biderman-2024",)),
    Rule("continual-pipeline", "a continual learning pipeline with sequential adaptations",
         lambda f: f.continual, {"full": 3.0, "lora": -1.0, "qlora": -1.0},
         "Sequential LoRA fine-tunes degraded earlier tasks faster than full fine-tuning (Shuttleworth et al. tie "
         "it to accumulating intruder dimensions): a potential blocker for adaptive systems.", ("intruders-2024",)),
    Rule("multi-adapter", "several task-specific adapters swapped at runtime",
         lambda f: f.multi_adapter, {"lora": 3.0, "qlora": 1.0, "full": -3.0},
         "Many small adapters on one frozen base can be swapped per request; full fine-tuning gives one model "
         "copy per task.", ("seed", "hu-2021")),
    Rule("accuracy-priority", "the final 5-10% of accuracy justifies the compute cost",
         lambda f: f.accuracy_priority, {"full": 2.5, "qlora": -1.0},
         "When the last points of accuracy matter and compute is there, full fine-tuning is the ceiling; QLoRA "
         "makes less sense when maximum accuracy is needed.", ("seed", "anyscale-2023")),
    Rule("long-term-deployment", "training once for long-term deployment", lambda f: f.long_term, {"full": 1.5},
         "A one-off training cost amortised over a long deployment buys full fine-tuning's extra accuracy.",
         ("seed",)),
    Rule("time-bottleneck", "training time is the bottleneck", lambda f: f.time_bottleneck,
         {"qlora": -3.0, "lora": 1.0},
         "QLoRA trains ~39% longer (Raschka: 6,686 s -> 10,060 s) for its memory saving; not worth it when time "
         "is what you lack.", ("raschka-2023", "qlora-2023")),
    Rule("quantized-inference", "quantised inference is planned anyway", lambda f: f.quantized_inference,
         {"qlora": 1.5}, "Training against the 4-bit base you will deploy costs little accuracy and matches "
         "inference.", ("qlora-2023",)),
    Rule("fast-iteration", "iterating quickly, faster experiment cycles", lambda f: f.fast_iteration,
         {"lora": 1.5, "qlora": 0.5, "full": -1.0},
         "LoRA runs are small and quick to start, so experiment cycles are short (QLoRA too, on small cards).",
         ("seed",)),
]


def fired(facts: Facts) -> list[Rule]:
    return [r for r in RULES if r.when(facts)]


def scores(facts: Facts, set_aside: frozenset[str] = frozenset()) -> dict[str, float]:
    """Each method's votes from the fired rules, less the rules `set_aside` (the evidence nearest the user's model
    contradicts them)."""
    out = dict.fromkeys(METHOD_ORDER, 0.0)
    for rule in fired(facts):
        if rule.id in set_aside:
            continue
        for method, weight in rule.votes.items():
            out[method] += weight
    return out


def preferred(facts: Facts, set_aside: frozenset[str] = frozenset()) -> str:
    s = scores(facts, set_aside)
    return max(METHOD_ORDER, key=lambda m: (s[m], -METHOD_ORDER.index(m)))
