"""`math-hard`: the `math` task's training problems, tested out of distribution (issue 15, claim 3).

Train and validation are drawn exactly as in `math` (one to three steps, small numbers). The test split asks
what no training example showed: five-step chains (two products, their sum, a gift, a loss) with factors from
11 to 29 where training saw 2 to 9. A model that learned the answer format and a few number patterns scores on
`math` but not here; one that learned to carry out each step does. The seed's claim that LoRA trails full
fine-tuning on reasoning should bite here first.

    Question: Ana buys 14 boxes of pens with 23 in each box and 12 bags with 17 in each bag. A friend gives
    Ana 36 more, and Ana loses 41. How many pens does Ana have?
    Answer: The boxes hold 14 * 23 = 322 pens.
    The bags hold 12 * 17 = 204 pens.
    Together, 322 + 204 = 526 pens.
    After the gift, 526 + 36 = 562 pens.
    After losing some, 562 - 41 = 521 pens.
    #### 521
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from tunewise.tasks import math_task
from tunewise.tasks.base import TaskExample
from tunewise.zoo.corpus import FIRST_NAMES, ITEMS


def five_step(rng: random.Random) -> TaskExample:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    a, b, c, d = (rng.randrange(11, 30) for _ in range(4))
    gift, lost = rng.randrange(11, 60), rng.randrange(11, 60)
    boxes, bags = a * b, c * d
    total = boxes + bags
    after_gift = total + gift
    ans = after_gift - lost
    q = (f"{name} buys {a} boxes of {item} with {b} in each box and {c} bags with {d} in each bag. A friend gives "
         f"{name} {gift} more, and {name} loses {lost}. How many {item} does {name} have?")
    sol = (f"The boxes hold {a} * {b} = {boxes} {item}.\nThe bags hold {c} * {d} = {bags} {item}.\n"
           f"Together, {boxes} + {bags} = {total} {item}.\nAfter the gift, {total} + {gift} = {after_gift} {item}.\n"
           f"After losing some, {after_gift} - {lost} = {ans} {item}.")
    return TaskExample(f"Question: {q}\nAnswer:", f" {sol}\n#### {ans}")


def make_examples(rng: random.Random, n: int, ctx: dict[str, Any]) -> list[TaskExample]:
    draw = five_step if ctx.get("split") == "test" else math_task.example
    return [draw(rng) for _ in range(n)]


SPEC = replace(
    math_task.SPEC, name="math-hard", make_examples=make_examples, max_new_tokens=160,
    description="math's training problems; tested on 5-step chains with factors 11-29 (out of distribution)",
)
