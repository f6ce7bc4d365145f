"""`math`: word problems with a worked solution ending in `#### N` (the GSM8k shape), scored on the final number.

    Question: Ana has 12 pens. She buys 5 more and then gives away 3. How many pens does Ana have now?
    Answer: Ana has 12 + 5 = 17 pens.
    Then 17 - 3 = 14 pens.
    #### 14

A third are the one-step problems the tiny base read in pre-training (corpus.word_problem); the rest take two or
three steps, which the base has not seen.
"""

from __future__ import annotations

import random

from tunewise.tasks.base import TaskExample, TaskSpec, independent
from tunewise.zoo.corpus import FIRST_NAMES, ITEMS, word_problem


def _two_step(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randrange(5, 40), rng.randrange(2, 20)
        c = rng.randrange(1, a + b)
        mid, ans = a + b, a + b - c
        q = (f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. "
             f"How many {item} does {name} have now?")
        sol = f"{name} has {a} + {b} = {mid} {item}.\nThen {mid} - {c} = {ans} {item}."
    elif kind == 1:
        a, b, c = rng.randrange(2, 10), rng.randrange(2, 10), rng.randrange(1, 20)
        mid, ans = a * b, a * b + c
        q = (f"{name} has {a} bags with {b} {item} in each bag, and {c} loose {item}. "
             f"How many {item} does {name} have in total?")
        sol = f"The bags hold {a} * {b} = {mid} {item}.\nWith the loose ones, {mid} + {c} = {ans} {item}."
    else:
        friend = rng.choice([f for f in FIRST_NAMES if f != name])
        a, b = rng.randrange(3, 30), rng.randrange(2, 15)
        mid, ans = a + b, a + (a + b)
        q = (f"{name} has {a} {item}. {friend} has {b} more {item} than {name}. "
             f"How many {item} do they have together?")
        sol = f"{friend} has {a} + {b} = {mid} {item}.\nTogether they have {a} + {mid} = {ans} {item}."
    return q, f"{sol}\n#### {ans}", ans


def _three_step(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    a, b = rng.randrange(2, 8), rng.randrange(2, 8)
    c, d = rng.randrange(1, 15), rng.randrange(1, 10)
    m1 = a * b
    m2 = m1 + c
    d = min(d, m2)
    ans = m2 - d
    q = (f"{name} buys {a} packs of {item} with {b} in each pack. A friend gives {name} {c} more, "
         f"and {name} loses {d}. How many {item} does {name} have?")
    sol = (f"The packs hold {a} * {b} = {m1} {item}.\nAfter the gift, {m1} + {c} = {m2} {item}.\n"
           f"After losing some, {m2} - {d} = {ans} {item}.")
    return q, f"{sol}\n#### {ans}", ans


def example(rng: random.Random) -> TaskExample:
    steps = rng.choices([1, 2, 3], [1, 1, 1])[0]
    q, sol, _ = word_problem(rng) if steps == 1 else _two_step(rng) if steps == 2 else _three_step(rng)
    return TaskExample(f"Question: {q}\nAnswer:", f" {sol}")


SPEC = TaskSpec(
    name="math",
    description="word problems with a worked solution ending '#### N' (GSM8k shape); final-number accuracy",
    scorer="number", stop=["\nQuestion:", "\n\n"], max_new_tokens=112, make_examples=independent(example),
    instruction="Solve the word problem step by step, one calculation per line, then give the final answer on "
                "the last line as '#### N'.",
)
