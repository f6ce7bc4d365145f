"""The generated pre-training corpus of the tiny base: the base skills later work measures.

Four kinds of documents, all templated and seeded:
- entity prose: restaurants, products and people with attributes;
- arithmetic facts and short calculations with answers;
- SQL over three small schemas (the same schemas the `sql` task uses);
- short word problems with a worked answer ending in `#### N` (the GSM8k shape).

The vocabularies here are shared with the built-in tasks (tunewise.tasks), so that fine-tuning tasks are about
things the base has read, as in the published studies.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

FOODS = ["thai", "italian", "indian", "mexican", "french", "chinese", "japanese", "greek"]
RATINGS = ["poor", "average", "good", "excellent"]
PRICES = ["cheap", "moderate", "expensive"]
AREAS = ["riverside", "city centre", "old town", "harbour"]
NAME_FIRST = ["Aurora", "Golden", "Blue", "Little", "Silver", "Red", "Green", "Olive", "Copper", "Maple",
              "Sunny", "Velvet", "Amber", "Cedar", "Coral", "Ivory"]
NAME_SECOND = ["Bistro", "Kitchen", "Garden", "Table", "Spoon", "House", "Corner", "Grill", "Cafe", "Oven"]

CATEGORIES = ["lamp", "chair", "kettle", "backpack", "watch", "speaker", "blender", "jacket"]
BRANDS = ["Lumen", "Nordik", "Vista", "Apex", "Orbit", "Pebble"]
PRODUCT_NAMES = ["Nimbus", "Atlas", "Comet", "Ember", "Fjord", "Glade", "Harbor", "Iris", "Juniper", "Kestrel",
                 "Lotus", "Meridian"]

FIRST_NAMES = ["Maya", "Leo", "Ana", "Omar", "Ines", "Tom", "Sara", "Ravi", "Lena", "Kai", "Nora", "Ivan",
               "Zoe", "Sam", "Mila", "Ben"]
LAST_NAMES = ["Chen", "Garcia", "Novak", "Okafor", "Silva", "Berg", "Khan", "Moreau", "Rossi", "Tanaka"]
JOBS = ["teacher", "doctor", "engineer", "baker", "pilot", "writer", "nurse", "farmer"]
CITIES = ["Oslo", "Lima", "Porto", "Kyoto", "Dakar", "Quebec", "Vienna", "Perth"]

SCHEMAS = {
    "restaurants": "CREATE TABLE restaurants (name TEXT, food TEXT, rating TEXT, price TEXT, area TEXT, seats INTEGER);",
    "products": "CREATE TABLE products (name TEXT, category TEXT, brand TEXT, price INTEGER, stars INTEGER);",
    "people": "CREATE TABLE people (name TEXT, job TEXT, city TEXT, age INTEGER);",
}

ITEMS = ["apples", "books", "coins", "pens", "stamps", "shells", "cards", "marbles"]


@dataclass(frozen=True)
class Restaurant:
    name: str
    food: str
    rating: str
    price: str
    area: str
    seats: int


def restaurant(rng: random.Random) -> Restaurant:
    return Restaurant(f"{rng.choice(NAME_FIRST)} {rng.choice(NAME_SECOND)}", rng.choice(FOODS),
                      rng.choice(RATINGS), rng.choice(PRICES), rng.choice(AREAS), rng.randrange(10, 90))


def restaurant_text(rng: random.Random, r: Restaurant) -> str:
    templates = [
        "{name} is a {food} restaurant in the {area} area. It has {an} {rating} rating and {price} prices.",
        "In the {area} area you will find {name}, which serves {food} food. Prices are {price} and the rating is {rating}.",
        "{name} serves {food} food at {price} prices. Guests give it {an} {rating} rating. It has {seats} seats.",
        "Looking for {food} food? {name} in the {area} area is {price}, with {an} {rating} rating.",
    ]
    an = "an" if r.rating[0] in "aeiou" else "a"
    return rng.choice(templates).format(an=an, **r.__dict__)


def product_text(rng: random.Random) -> str:
    name, cat, brand = rng.choice(PRODUCT_NAMES), rng.choice(CATEGORIES), rng.choice(BRANDS)
    price, stars = rng.randrange(5, 200), rng.randrange(1, 6)
    templates = [
        "The {name} {cat} is made by {brand}. It costs {price} dollars and is rated {stars} stars.",
        "{brand} sells the {name}, a {cat} for {price} dollars. Buyers rate it {stars} out of 5 stars.",
        "For {price} dollars you can buy the {name} {cat} from {brand}. It has {stars} stars.",
    ]
    return rng.choice(templates).format(name=name, cat=cat, brand=brand, price=price, stars=stars)


def person_text(rng: random.Random) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    job, city, age = rng.choice(JOBS), rng.choice(CITIES), rng.randrange(20, 70)
    templates = [
        "{first} {last} is a {job} from {city}. {first} is {age} years old.",
        "{first} {last} works as a {job} in {city} and is {age} years old.",
        "At {age}, {first} {last} is a {job} who lives in {city}.",
    ]
    return rng.choice(templates).format(first=first, last=last, job=job, city=city, age=age)


def arithmetic_fact(rng: random.Random) -> tuple[str, str]:
    """One arithmetic question and its answer, e.g. ('23 + 45 =', ' 68')."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randrange(0, 13), rng.randrange(0, 13)
        c = a * b
    elif op == "+":
        a, b = rng.randrange(0, 50), rng.randrange(0, 50)
        c = a + b
    else:
        a = rng.randrange(0, 100)
        b = rng.randrange(0, a + 1)
        c = a - b
    return f"{a} {op} {b} =", f" {c}"


def arithmetic_text(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randrange(3, 7)):
        q, a = arithmetic_fact(rng)
        lines.append(q + a if rng.random() < 0.7 else f"What is {q[:-2]}? The answer is{a}.")
    return "\n".join(lines)


def sql_example(rng: random.Random) -> tuple[str, str, str]:
    """(table, question, query) over one of SCHEMAS."""
    table = rng.choice(list(SCHEMAS))
    if table == "restaurants":
        food, area, rating = rng.choice(FOODS), rng.choice(AREAS), rng.choice(RATINGS)
        n = rng.randrange(10, 90)
        return table, *rng.choice([
            (f"Which restaurants serve {food} food?", f"SELECT name FROM restaurants WHERE food = '{food}';"),
            (f"How many restaurants are in the {area} area?", f"SELECT COUNT(*) FROM restaurants WHERE area = '{area}';"),
            (f"List the {food} restaurants with a {rating} rating.",
             f"SELECT name FROM restaurants WHERE food = '{food}' AND rating = '{rating}';"),
            (f"Which restaurants have more than {n} seats?", f"SELECT name FROM restaurants WHERE seats > {n};"),
        ])
    if table == "products":
        cat, brand, p = rng.choice(CATEGORIES), rng.choice(BRANDS), rng.randrange(10, 190)
        return table, *rng.choice([
            (f"What is the average price of a {cat}?", f"SELECT AVG(price) FROM products WHERE category = '{cat}';"),
            (f"Which products does {brand} make?", f"SELECT name FROM products WHERE brand = '{brand}';"),
            (f"Which products cost less than {p} dollars?", f"SELECT name FROM products WHERE price < {p};"),
            ("What is the most expensive product?", "SELECT name FROM products ORDER BY price DESC LIMIT 1;"),
        ])
    job, city, age = rng.choice(JOBS), rng.choice(CITIES), rng.randrange(20, 70)
    return table, *rng.choice([
        (f"Who lives in {city}?", f"SELECT name FROM people WHERE city = '{city}';"),
        (f"How many people work as a {job}?", f"SELECT COUNT(*) FROM people WHERE job = '{job}';"),
        (f"Who is older than {age}?", f"SELECT name FROM people WHERE age > {age};"),
        ("What is the average age of the people?", "SELECT AVG(age) FROM people;"),
    ])


def sql_text(rng: random.Random) -> str:
    table, question, query = sql_example(rng)
    return f"Schema: {SCHEMAS[table]}\nQuestion: {question}\nSQL: {query}"


def word_problem(rng: random.Random) -> tuple[str, str, int]:
    """(question, worked solution ending in '#### N', N)."""
    name, item = rng.choice(FIRST_NAMES), rng.choice(ITEMS)
    a, b = rng.randrange(2, 30), rng.randrange(2, 20)
    kind = rng.randrange(3)
    if kind == 0:
        q = f"{name} has {a} {item}. {name} buys {b} more. How many {item} does {name} have now?"
        ans = a + b
        sol = f"{name} has {a} + {b} = {ans} {item}."
    elif kind == 1:
        a = a + b
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        ans = a - b
        sol = f"{name} has {a} - {b} = {ans} {item} left."
    else:
        a, b = rng.randrange(2, 10), rng.randrange(2, 10)
        q = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?"
        ans = a * b
        sol = f"{name} has {a} * {b} = {ans} {item}."
    return q, f"{sol}\n#### {ans}", ans


def word_problem_text(rng: random.Random) -> str:
    q, sol, _ = word_problem(rng)
    return f"Question: {q}\nAnswer: {sol}"


# Share of each kind of document in the corpus (the "corpus recipe" recorded in the manifest).
RECIPE = {"restaurant": 0.2, "product": 0.1, "person": 0.1, "arithmetic": 0.3, "sql": 0.15, "word_problem": 0.15}


def document(rng: random.Random, kind: str) -> str:
    if kind == "restaurant":
        return " ".join(restaurant_text(rng, restaurant(rng)) for _ in range(rng.randrange(1, 3)))
    return {"product": product_text, "person": person_text, "arithmetic": arithmetic_text,
            "sql": sql_text, "word_problem": word_problem_text}[kind](rng)


def documents(n: int, seed: int) -> Iterator[str]:
    """n documents drawn by RECIPE; the same (n, seed) always gives the same documents."""
    rng = random.Random(seed)
    kinds, weights = zip(*RECIPE.items())
    for _ in range(n):
        yield document(rng, rng.choices(kinds, weights)[0])


HELDOUT_SEED_OFFSET = 1_000_003


def heldout_documents(n: int, seed: int = 0) -> list[str]:
    """Text of the base's own corpus distribution that the build never trains on (the `lm` retention probe)."""
    return list(documents(n, seed + HELDOUT_SEED_OFFSET))
