"""`math-chain`: one quantity carried through a chain of small steps (issue 40, claim 3), scored on the final number.

Between `math` (one to three steps, which a 135M base already half solves) and `math-hard` (five steps with
two-digit factors, never shown in training: every method scored 0). Here training and test come from the same
generator, so training can teach the procedure; what makes it reasoning is the length of the chain: each step
reads the previous line's result, and one slip anywhere loses the answer.

    Question: Ana has 6 pens. Ana buys 4 more, gives away 3, doubles them, then buys 7 more. How many pens
    does Ana have now?
    Answer: 6 + 4 = 10
    10 - 3 = 7
    7 * 2 = 14
    14 + 7 = 21
    #### 21

The worked lines are bare arithmetic so that four steps, the chat template and the instruction fit the study's
160 tokens on smollm2.

`chain_spec(steps, low, high)` makes the task at another length or number range (benchmarks/math_chain_base.py
measures where a base starts on each); the registered `math-chain` is DEFAULT_STEPS steps of LOW-HIGH.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.tasks import math_task
from tunewise.tasks.base import TaskExample, TaskSpec
from tunewise.zoo.corpus import FIRST_NAMES, ITEMS

DEFAULT_STEPS, LOW, HIGH = 4, 2, 9
CAP = 200  # a product that would pass this becomes an addition: the numbers stay small


def _step(rng: random.Random, x: int, low: int, high: int) -> tuple[str, str, int]:
    """(the question's clause, the solution's line, the new count) for one step from count x."""
    kind = rng.choice(("buy", "give", "times"))
    if kind == "give" and x > low:
        b = rng.randint(low, min(high, x - 1))
        return f"gives away {b}", f"{x} - {b} = {x - b}", x - b
    if kind == "times" and 2 * x <= CAP:
        k = 2 if 3 * x > CAP else rng.choice((2, 3))
        return f"{'doubles' if k == 2 else 'triples'} them", f"{x} * {k} = {x * k}", x * k
    b = rng.randint(low, high)
    return f"buys {b} more", f"{x} + {b} = {x + b}", x + b


def chain_example(rng: random.Random, steps: int = DEFAULT_STEPS, low: int = LOW, high: int = HIGH) -> TaskExample:
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    x = rng.randint(low, high)
    question, clauses, lines = f"{name} has {x} {item}.", [], []
    for _ in range(steps):
        clause, line, x = _step(rng, x, low, high)
        clauses.append(clause)
        lines.append(line)
    told = clauses[0] if steps == 1 else ", ".join(clauses[:-1]) + f", then {clauses[-1]}"
    question += f" {name} {told}. How many {item} does {name} have now?"
    return TaskExample(f"Question: {question}\nAnswer:", " " + "\n".join(lines) + f"\n#### {x}")


def chain_spec(steps: int = DEFAULT_STEPS, low: int = LOW, high: int = HIGH) -> TaskSpec:
    """The task at `steps` steps over numbers low..high; named `math-chain` at the defaults, else
    `math-chain-<steps>x<low>-<high>` (its meta.json carries everything eval needs)."""
    if steps < 1 or not 1 <= low <= high:
        raise TunewiseError(f"math-chain: need steps >= 1 and 1 <= low <= high (got {steps}, {low}, {high})",
                            "e.g. steps 4, numbers 2 to 9")
    default = (steps, low, high) == (DEFAULT_STEPS, LOW, HIGH)

    def make_examples(rng: random.Random, n: int, ctx: dict[str, Any]) -> list[TaskExample]:
        return [chain_example(rng, steps, low, high) for _ in range(n)]

    return replace(math_task.SPEC, name="math-chain" if default else f"math-chain-{steps}x{low}-{high}",
                   make_examples=make_examples, max_new_tokens=24 + 16 * steps,
                   description=f"one count carried through {steps} small steps (numbers {low}-{high}); final-number "
                               "accuracy")


SPEC = chain_spec()
