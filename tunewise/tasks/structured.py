"""`structured`: a sentence about a restaurant -> its meaning representation (the ViGGO shape).

    Sentence: Aurora Bistro is a thai place in the harbour area with a good rating.
    Meaning:  inform(name[Aurora Bistro], food[thai], area[harbour], rating[good])

Five dialogue acts, and a varying subset of slots, rendered by clause templates in a shuffled order; the meaning
representation always lists slots in SLOT_ORDER, so the model has to learn the mapping, not copy the word order.
"""

from __future__ import annotations

import random
from typing import Any

from tunewise.tasks.base import TaskExample, TaskSpec, independent
from tunewise.zoo.corpus import RATINGS, restaurant

SLOT_ORDER = ["name", "food", "area", "price", "rating", "seats"]

# Clauses that state one slot inside a sentence about {name}.
_CLAUSE = {
    "food": ["serves {food} food", "is {fan} {food} place", "offers {food} dishes"],
    "area": ["is in the {area} area", "is located in the {area} area", "sits in the {area}"],
    "price": ["has {price} prices", "is {price}", "charges {price} prices"],
    "rating": ["has {an} {rating} rating", "is rated {rating}", "gets {an} {rating} rating from guests"],
    "seats": ["has {seats} seats", "seats {seats} guests"],
}
_ATTR_QUESTION = {
    "food": ["What kind of food do you like?", "Which cuisine are you in the mood for?"],
    "area": ["Which part of town do you prefer?", "What area should the restaurant be in?"],
    "price": ["How much would you like to spend?", "What price range suits you?"],
    "rating": ["How well rated should the place be?", "What rating are you looking for?"],
}


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def mr(act: str, slots: dict[str, Any]) -> str:
    body = ", ".join(f"{k}[{slots[k]}]" for k in SLOT_ORDER if k in slots)
    return f"{act}({body})"


def _clauses(rng: random.Random, values: dict[str, Any], keys: list[str]) -> list[str]:
    an = "an" if str(values.get("rating", "x"))[0] in "aeiou" else "a"
    fan = "an" if str(values.get("food", "x"))[0] in "aeiou" else "a"
    keys = keys[:]
    rng.shuffle(keys)
    return [rng.choice(_CLAUSE[k]).format(an=an, fan=fan, **values) for k in keys]


def example(rng: random.Random) -> TaskExample:
    r = restaurant(rng)
    values = {"name": r.name, "food": r.food, "area": r.area, "price": r.price, "rating": r.rating, "seats": r.seats}
    act = rng.choices(["inform", "recommend", "confirm", "give_opinion", "request_attribute"], [4, 2, 2, 2, 1])[0]
    if act == "request_attribute":
        attr = rng.choice(list(_ATTR_QUESTION))
        return _ex(rng.choice(_ATTR_QUESTION[attr]), f"request_attribute({attr}[])")
    if act == "give_opinion":
        rating = rng.choice(RATINGS)
        extra = rng.sample(["food", "area"], rng.randrange(0, 2))
        slots = {"name": r.name, "rating": rating, **{k: values[k] for k in extra}}
        opinion = {"poor": "pretty bad", "average": "just average", "good": "really good",
                   "excellent": "excellent"}[rating]
        if extra:
            text = f"I think {r.name}, which {_join(_clauses(rng, values, extra))}, is {opinion}."
        else:
            text = rng.choice([f"I think {r.name} is {opinion}.", f"In my opinion {r.name} is {opinion}."])
        return _ex(text, mr("give_opinion", slots))
    if act == "confirm":
        keys = rng.sample(["food", "area", "price"], rng.randrange(1, 3))
        slots = {"name": r.name, **{k: values[k] for k in keys}}
        text = f"Did you mean {r.name}, which {_join(_clauses(rng, values, keys))}?"
        return _ex(text, mr("confirm", slots))
    n = rng.randrange(2, 5) if act == "inform" else rng.randrange(1, 3)
    keys = rng.sample(["food", "area", "price", "rating", "seats"], n)
    slots = {"name": r.name, **{k: values[k] for k in keys}}
    body = _join(_clauses(rng, values, keys))
    if act == "inform":
        text = f"{r.name} {body}."
    else:
        text = rng.choice([f"You should try {r.name}, it {body}.", f"I recommend {r.name}, which {body}."])
    return _ex(text, mr(act, slots))


def _ex(sentence: str, meaning: str) -> TaskExample:
    return TaskExample(f"Sentence: {sentence}\nMeaning:", f" {meaning}")


SPEC = TaskSpec(
    name="structured",
    description="restaurant sentence -> meaning representation act(slot[value], ...) (ViGGO shape)",
    scorer="mr", stop=["\n"], max_new_tokens=48, make_examples=independent(example),
    instruction="Write the meaning of the restaurant sentence as a meaning representation act(slot[value], ...), "
                "for example inform(name[Velvet Oven], food[mexican], price[moderate]). Answer with the meaning "
                "representation only.",
)
