"""`classify`: a short customer message about a restaurant or a product -> its intent (one of six labels).

    Message: Can I get a table for 4 at Aurora Bistro tonight?
    Intent:  booking

The same files train an encoder for sequence classification (the trainer reads prompt -> text, completion ->
label, stripped); meta.json lists the labels, which `tunewise eval` uses to map a classifier's outputs when the
run did not save its own labels.json.
"""

from __future__ import annotations

import random

from tunewise.tasks.base import TaskExample, TaskSpec, independent
from tunewise.zoo.corpus import AREAS, BRANDS, CATEGORIES, FOODS, NAME_FIRST, NAME_SECOND, PRODUCT_NAMES

LABELS = ["booking", "price", "location", "menu", "complaint", "praise"]

_TEMPLATES = {
    "booking": [
        "Can I get a table for {n} at {place} tonight?",
        "I would like to reserve {place} for {n} people on Friday.",
        "Please book {n} seats at {place} for lunch.",
        "Is there a free table at {place} for {n} this evening?",
        "We are {n} people, can you hold a table at {place}?",
    ],
    "price": [
        "How much does the {product} {cat} cost?",
        "Is {place} expensive or cheap?",
        "What is the price of a {food} dinner at {place}?",
        "Is the {brand} {cat} on sale this week?",
        "How many dollars is a meal at {place}?",
    ],
    "location": [
        "Where is {place}?",
        "How do I get to {place} from the {area}?",
        "Is {place} near the {area} area?",
        "Which street is {place} on?",
        "Is there a {brand} shop in the {area} area?",
    ],
    "menu": [
        "Does {place} serve {food} food?",
        "What dishes are on the menu at {place}?",
        "Do you have vegetarian {food} options at {place}?",
        "Is there a kids menu at {place}?",
        "Which {food} dishes does {place} cook?",
    ],
    "complaint": [
        "My {product} {cat} broke after {n} days.",
        "The {food} food at {place} was cold and the staff were rude.",
        "We waited {n} hours at {place} and nobody came.",
        "The {brand} {cat} I bought does not work at all.",
        "I was charged twice at {place} and I want my money back.",
    ],
    "praise": [
        "The {food} food at {place} was wonderful.",
        "I love my new {product} {cat}, it works perfectly.",
        "Thanks to the staff at {place}, we had a lovely evening.",
        "The {brand} {cat} is the best I have ever owned.",
        "{place} has the friendliest waiters in the {area}.",
    ],
}


def example(rng: random.Random) -> TaskExample:
    label = rng.choice(LABELS)
    values = {"place": f"{rng.choice(NAME_FIRST)} {rng.choice(NAME_SECOND)}", "food": rng.choice(FOODS),
              "area": rng.choice(AREAS), "product": rng.choice(PRODUCT_NAMES), "cat": rng.choice(CATEGORIES),
              "brand": rng.choice(BRANDS), "n": rng.randrange(2, 9)}
    text = rng.choice(_TEMPLATES[label]).format(**values)
    return TaskExample(f"Message: {text}\nIntent:", f" {label}")


SPEC = TaskSpec(
    name="classify",
    description=f"customer message -> intent, one of {len(LABELS)} labels ({', '.join(LABELS)})",
    scorer="classify", stop=["\n"], max_new_tokens=8, make_examples=independent(example),
    scorer_options={"labels": LABELS}, kind="classification",
    instruction=f"Classify the customer message into one intent: {', '.join(LABELS)}. Answer with the intent only.",
)
