"""Several training sources in one run, each with a weight: files / datasets, and the skills of retention probes.

    data:
      train:
        - {path: data/train.jsonl, weight: 0.9}
        - {probe: knowledge, weight: 0.1}

The mix is drawn once, before training, as a pure function of the seed: source i gets round(N * w_i / sum w)
records, where N is the smallest size at which every record of every file source is used at least once
(N = max over file sources of n_i / p_i). A source with fewer records than its share repeats them (each pass in
a fresh seeded order); a probe source generates its share. The trainer then shuffles the mix every epoch.

A probe source yields training records of the skill its probe measures, drawn apart from what the probe asks:
    arithmetic  calculations from a seed stream the probe never uses (prompt/completion)
    lm          documents of the tiny base's corpus from a stream disjoint from the probe's held-out documents
    knowledge   the factual questions of the probe's bank, asked the way the probe asks them (chat). The probe
                scores the questions the base already answered, so this is rehearsal of that knowledge: the
                retention it measures afterwards is of rehearsed items
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tunewise.data.formats import Record
from tunewise.data.knowledge_items import KNOWLEDGE_ITEMS, knowledge_messages
from tunewise.errors import TunewiseError
from tunewise.zoo.corpus import arithmetic_fact, heldout_documents

MIXABLE_PROBES = ("arithmetic", "lm", "knowledge")
TRAIN_ARITHMETIC_SEED = 9_000_011  # neither the corpus build (0) nor the arithmetic probe (7_000_003)
TRAIN_LM_SEED = 5_000_017
TRAIN_KNOWLEDGE_SEED = 3  # heldout_documents(seed) draws from seed + 1_000_003; the probe uses seed 0


@dataclass
class Part:
    """One source of a mix: its label (for errors and the summary), records and weight."""

    label: str
    weight: float
    records: list[Record]
    probe: str | None = None  # set for a probe source: its records are generated to the quota


def mix_sizes(parts: list[Part]) -> list[int]:
    """Records drawn from each part (see the module docstring for the rule)."""
    total_w = sum(p.weight for p in parts)
    files = [p for p in parts if p.probe is None]
    if not files:
        raise TunewiseError("data.train has only probe sources, so the size of the mix is not defined",
                            "add the training file: data.train: [{path: train.jsonl, weight: 0.9}, "
                            "{probe: ..., weight: 0.1}]")
    n = max(len(p.records) * total_w / p.weight for p in files)
    n = math.ceil(n - 1e-9)
    return [max(1, round(n * p.weight / total_w)) for p in parts]


def draw(records: list[Record], k: int, rng: random.Random) -> list[Record]:
    """k records: a seeded sample when k <= len, else whole seeded passes plus a sample of the rest."""
    out: list[Record] = []
    while k - len(out) >= len(records):
        order = list(records)
        rng.shuffle(order)
        out += order
    return out + rng.sample(records, k - len(out))


def mix(parts: list[Part], seed: int) -> list[tuple[str, list[Record]]]:
    """(label, drawn records) per part; probe parts are filled from their generator to their size."""
    rng = random.Random(seed * 1_000_003 + 17)
    out = []
    for part, k in zip(parts, mix_sizes(parts), strict=True):
        records = probe_records(part.probe, k) if part.probe else draw(part.records, k, rng)
        out.append((part.label, records))
    return out


def probe_records(name: str, n: int) -> list[Record]:
    """n training records of the skill the probe `name` measures (see the module docstring)."""
    if name == "arithmetic":
        rng = random.Random(TRAIN_ARITHMETIC_SEED)
        facts = [arithmetic_fact(rng) for _ in range(n)]
        return [Record({"prompt": q, "completion": a}, i + 1) for i, (q, a) in enumerate(facts)]
    if name == "lm":
        return [Record({"text": t}, i + 1) for i, t in enumerate(heldout_documents(n, TRAIN_LM_SEED))]
    if name == "knowledge":
        order = list(range(len(KNOWLEDGE_ITEMS)))
        random.Random(TRAIN_KNOWLEDGE_SEED).shuffle(order)  # categories mixed, whatever n
        out = []
        for i in range(n):
            _, question, answer = KNOWLEDGE_ITEMS[order[i % len(order)]]
            messages = knowledge_messages(question) + [{"role": "assistant", "content": answer}]
            out.append(Record({"messages": messages}, i + 1))
        return out
    if name == "kl":
        raise TunewiseError("the kl probe measures drift from the base, it has no training records of its own",
                            "mix in the skill you want kept instead, e.g. {probe: knowledge, weight: 0.1}")
    raise TunewiseError(f"unknown probe source '{name}'", f"use one of {', '.join(MIXABLE_PROBES)}, or give a "
                                                          "probe set file as {path: FILE, weight: W}")


def mix_config_line(train: str, probe: str, weight: float = 0.1) -> str:
    """The config line that mixes a lost skill back into training (what compare's verdict prints)."""
    keep = round(1 - weight, 6)
    source = f"{{probe: {probe}, weight: {weight:g}}}" if probe in MIXABLE_PROBES else \
        f"{{path: {probe}, weight: {weight:g}}}"
    return f"data.train: [{{path: {train}, weight: {keep:g}}}, {source}]"
