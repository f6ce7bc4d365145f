"""Can a base copy a word from its prompt? The skill every built-in generation task needs, measured against chance.

Each built-in task's answer repeats values from the prompt: the job or city a SQL question names, the food and area a
sentence states, the numbers of a word problem. A base that cannot find a word in its context and copy it gives a
fine-tuning run nothing to adapt. This prints, for each base, how often greedy generation copies the right value in
three settings of the base's own pre-training formats, next to what guessing among the candidates would score:

- sql word: "Question: How many people work as a baker?" -> the query names 'baker' (a job, city, category, ...);
- sql number: "Question: Who is older than 41?" -> the query has 41;
- list: "List: Oslo pilot 44 ...\\nAgain:" -> the first listed word again.

    .venv/bin/python benchmarks/base_copying.py                       # the shipped tiny base
    .venv/bin/python benchmarks/base_copying.py --base tiny --base /tmp/other-base
"""

from __future__ import annotations

import argparse
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tunewise.evaluate.generation import greedy_generate  # noqa: E402
from tunewise.models import load_base  # noqa: E402
from tunewise.zoo.corpus import CATEGORIES, CITIES, FOODS, JOBS, SCHEMAS  # noqa: E402

# (table, question template, the vocabulary its value comes from), all in the corpus's own SQL shapes.
WORD_QUESTIONS = [
    ("people", "How many people work as a {}?", JOBS),
    ("people", "Who lives in {}?", CITIES),
    ("products", "What is the average price of a {}?", CATEGORIES),
    ("restaurants", "Which restaurants serve {} food?", FOODS),
]


def cases(n: int, seed: int) -> dict[str, tuple[list[str], list[str], float]]:
    """setting -> (prompts, the value each answer must contain, chance of guessing it)."""
    rng = random.Random(seed)
    word_p, word_v, chance = [], [], []
    for _ in range(n):
        table, q, vocab = rng.choice(WORD_QUESTIONS)
        v = rng.choice(vocab)
        word_p.append(f"Schema: {SCHEMAS[table]}\nQuestion: {q.format(v)}\nSQL:")
        word_v.append(f"'{v}'")
        chance.append(1 / len(vocab))
    num_v = [str(rng.randrange(20, 70)) for _ in range(n)]
    num_p = [f"Schema: {SCHEMAS['people']}\nQuestion: Who is older than {a}?\nSQL:" for a in num_v]
    words = JOBS + CITIES + CATEGORIES + FOODS
    lists = [rng.sample(words, 5) for _ in range(n)]
    return {
        "sql word": (word_p, word_v, sum(chance) / n),
        "sql number": (num_p, [f"> {a};" for a in num_v], 1 / 50),
        "list": ([f"List: {' '.join(ws)}\nAgain:" for ws in lists], [f" {ws[0]}" for ws in lists], 1 / len(words)),
    }


def copy_rates(base: str, n: int, seed: int) -> dict[str, tuple[float, float]]:
    model, tok = load_base(base)
    out = {}
    for setting, (prompts, values, chance) in cases(n, seed).items():
        gens = greedy_generate(model, tok, prompts, max_new_tokens=24, stop=["\n"])
        hit = [v in g if setting != "list" else g.startswith(v) for v, g in zip(values, gens)]
        out[setting] = (sum(hit) / n, chance)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", action="append", help="A base (repeatable); default: tiny.")
    p.add_argument("-n", type=int, default=96, help="Prompts per setting.")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"{'base':28s} {'setting':12s} {'copied':>7s} {'chance':>7s} {'copied/chance':>14s}")
    for base in a.base or ["tiny"]:
        for setting, (rate, chance) in copy_rates(base, a.n, a.seed).items():
            print(f"{base:28s} {setting:12s} {rate:7.3f} {chance:7.3f} {rate / chance:13.1f}x")


if __name__ == "__main__":
    main()
