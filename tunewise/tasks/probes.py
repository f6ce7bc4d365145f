"""Retention probes: skills the base has before fine-tuning, measured again after it.

    arithmetic  short calculations the tiny base learned in pre-training ('23 + 45 =' -> ' 68'), generated
                from a seed disjoint from the build's documents; exact number, accuracy (higher is better)
    lm          mean token loss on held-out documents of the base's own corpus (lower is better)
    knowledge   factual questions the base knew, asked as chat: is the right answer still the most likely among
                same-kind answers, by log-likelihood, no generation (any model; evaluate/base_probes.py)
    follows     the same questions answered by greedy generation: does the reply still contain the fact (format
                and knowledge together; any model)
    kl          next-token KL divergence from the base on generic instructions (any model; evaluate/base_probes.py)
    PATH.jsonl  the user's own probe set: {"prompt","completion"} records are scored by normalised match of a
                greedy generation (accuracy); {"text"} records by mean token loss

Here are the probes that need no model to build; `tunewise.evaluate.base_probes.load_probe` builds any of them
by name, running the base for knowledge and kl.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import TunewiseError
from tunewise.zoo.corpus import arithmetic_fact, heldout_documents

# The build draws its documents from random.Random(seed) with seed 0; this stream never meets it.
ARITHMETIC_SEED = 7_000_003
BUILTIN_PROBES = {
    "arithmetic": "short calculations from pre-training: exact number of a greedy answer (accuracy)",
    "lm": "mean token loss on held-out documents of the tiny base's corpus (lower is better)",
    "knowledge": "factual questions the base knew: share whose right answer is still the most likely among "
                 "same-kind answers, by log-likelihood through the chat template (any model)",
    "follows": "the knowledge questions answered by greedy generation: share whose reply still contains the fact "
               "(format and knowledge together; any model)",
    "kl": "mean next-token KL from the base on generic instructions and its own answers, nats (any model; 0 = base)",
}
# The tiny base's probes ask about its own corpus; on any other model these mean something.
TINY_PROBES = ["arithmetic", "lm"]
MODEL_AGNOSTIC_PROBES = ["knowledge", "follows", "kl"]
KL_TOLERANCE = 0.05  # nats per token of drift from the base that retention does not count as a drop


def default_probes(base: str) -> list[str]:
    from tunewise.defaults import TINY_BASE

    return list(TINY_PROBES if base == TINY_BASE else MODEL_AGNOSTIC_PROBES)


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # "generate" | "loss" | "kl" | "choice"
    metric: str
    higher_is_better: bool
    prompts: list = field(default_factory=list)  # text, or chat messages (kind "choice": the questions)

    references: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scorer: str = "normalized"
    stop: list[str] = field(default_factory=lambda: ["\n"])
    max_new_tokens: int = 8
    choices: list[list[str]] = field(default_factory=list)  # kind "choice": each question's answers, right first
    kl_reference: object = None  # evaluate.base_probes.KlReference, for kind "kl"
    abs_tolerance: float = 0.0  # worsening from a zero baseline that does not count as a drop


def arithmetic_probe(limit: int, seed: int = 0) -> Probe:
    rng = random.Random(ARITHMETIC_SEED + seed)
    facts = [arithmetic_fact(rng) for _ in range(limit)]
    return Probe("arithmetic", "generate", "accuracy", True, [q for q, _ in facts], [a for _, a in facts],
                 scorer="number", stop=["\n"], max_new_tokens=5)


def lm_probe(limit: int, seed: int = 0) -> Probe:
    return Probe("lm", "loss", "loss", False, texts=heldout_documents(limit, seed))


def user_probe(path: Path, limit: int) -> Probe:
    """A probe set in any format the trainer reads: prompt/completion and chat records (messages, sharegpt,
    alpaca) are scored by the match of a greedy answer, text records by mean token loss; one kind per file."""
    from tunewise.data.records import RecordError, normalise
    from tunewise.data.sources import iter_source

    prompts, refs, texts = [], [], []
    for row in iter_source(path):
        where = f"{path}:{row.line}"
        if row.problem is not None:
            raise TunewiseError(f"{where}: {row.problem}", "each record of a probe set is one JSON object")
        try:
            _, shape, rec = normalise(row.obj) if isinstance(row.obj, dict) else (None, None, None)
        except RecordError as e:
            field = "" if e.field == "(record)" else f"{e.field}: "
            raise TunewiseError(f"{where}: {field}{e.message}", "fix the record or remove the line") from None
        if shape == "chat" and len(rec["messages"]) >= 2 and rec["messages"][-1].get("role") == "assistant":
            prompts.append(rec["messages"][:-1])
            refs.append(rec["messages"][-1]["content"])
        elif shape == "prompt_completion" and isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):
            prompts.append(rec["prompt"])
            refs.append(rec["completion"])
        elif shape == "text" and isinstance(rec.get("text"), str):
            texts.append(rec["text"])
        else:
            raise TunewiseError(f"{where}: a probe record needs string fields 'prompt' and 'completion', "
                                "'text', or a conversation ending with the assistant's answer",
                                "fix the record or remove the line")
        if len(prompts) + len(texts) >= limit:
            break
    if prompts and texts:
        raise TunewiseError(f"{path}: mixes prompt/completion records and text records",
                            "use one probe file per kind")
    if not prompts and not texts:
        raise TunewiseError(f"{path}: the probe set is empty", "add JSONL records")
    name = str(path)
    if texts:
        return Probe(name, "loss", "loss", False, texts=texts)
    return Probe(name, "generate", "accuracy", True, prompts, refs, max_new_tokens=32)


def parse_probe_list(text: str | list[str] | None) -> list[str]:
    """'arithmetic,lm' or ['arithmetic', 'lm'] -> ['arithmetic', 'lm'] (empty items dropped, order kept)."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))
