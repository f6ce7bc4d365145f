"""The generated pre-training corpus of the tiny base: the base skills later work measures.

Six kinds of documents, all templated and seeded:
- entity prose: restaurants, products and people with attributes;
- reading: a passage, questions answered by copying a word from it, and a `kind(slot[value], ...)` record;
- lists of words repeated once, which teach the model to copy from its context;
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


@dataclass(frozen=True)
class Product:
    name: str
    cat: str
    brand: str
    price: int
    stars: int


def product(rng: random.Random) -> Product:
    return Product(rng.choice(PRODUCT_NAMES), rng.choice(CATEGORIES), rng.choice(BRANDS), rng.randrange(5, 200),
                   rng.randrange(1, 6))


def product_text(rng: random.Random, p: Product) -> str:
    templates = [
        "The {name} {cat} is made by {brand}. It costs {price} dollars and is rated {stars} stars.",
        "{brand} sells the {name}, a {cat} for {price} dollars. Buyers rate it {stars} out of 5 stars.",
        "For {price} dollars you can buy the {name} {cat} from {brand}. It has {stars} stars.",
    ]
    return rng.choice(templates).format(**p.__dict__)


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    job: str
    city: str
    age: int


def person(rng: random.Random) -> Person:
    return Person(rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(JOBS), rng.choice(CITIES),
                  rng.randrange(20, 70))


def person_text(rng: random.Random, p: Person) -> str:
    templates = [
        "{first} {last} is a {job} from {city}. {first} is {age} years old.",
        "{first} {last} works as a {job} in {city} and is {age} years old.",
        "At {age}, {first} {last} is a {job} who lives in {city}.",
    ]
    return rng.choice(templates).format(**p.__dict__)


def reading_text(rng: random.Random) -> str:
    """A passage about one entity, then questions answered from it, and for products and people a record line in
    the bracketed notation `kind(slot[value], ...)`. What the base learns here is to find a word in its context
    and copy it: the skill every built-in task leans on, and one a templated corpus alone barely teaches."""
    kind = rng.choice(["restaurant", "product", "person"])
    if kind == "restaurant":
        r = restaurant(rng)
        text = restaurant_text(rng, r)
        qa = [(f"What food does {r.name} serve?", r.food), (f"Which area is {r.name} in?", r.area),
              (f"How are the prices at {r.name}?", r.price), (f"What rating does {r.name} have?", r.rating),
              (f"How many seats does {r.name} have?", str(r.seats)),
              (f"What is the name of the {r.food} restaurant?", r.name)]
        record = None
    elif kind == "product":
        p = product(rng)
        text = product_text(rng, p)
        qa = [(f"Who makes the {p.name}?", p.brand), (f"What kind of product is the {p.name}?", p.cat),
              (f"How much does the {p.name} cost?", f"{p.price} dollars"), (f"How many stars does the {p.name} have?",
                                                                         str(p.stars))]
        record = (f"product(name[{p.name}], category[{p.cat}], brand[{p.brand}], price[{p.price}], "
                  f"stars[{p.stars}])")
    else:
        p = person(rng)
        text = person_text(rng, p)
        qa = [(f"What is the job of {p.first} {p.last}?", p.job), (f"Where does {p.first} live?", p.city),
              (f"How old is {p.first} {p.last}?", str(p.age))]
        record = f"person(name[{p.first} {p.last}], job[{p.job}], city[{p.city}], age[{p.age}])"
    asked = [(q, a) for q, a in qa if a.split()[0] in text]  # only what the passage states
    lines = [f"Question: {q}\nAnswer: {a}." for q, a in rng.sample(asked, min(len(asked), rng.randrange(1, 4)))]
    if record is not None and rng.random() < 0.6:
        lines.insert(rng.randrange(len(lines) + 1), f"Record: {record}")
    return "\n".join([text, *lines])


LIST_WORDS = (FOODS + RATINGS + PRICES + AREAS + NAME_FIRST + NAME_SECOND + CATEGORIES + BRANDS + PRODUCT_NAMES
              + FIRST_NAMES + LAST_NAMES + JOBS + CITIES + ITEMS)


def list_text(rng: random.Random) -> str:
    """A list of words and numbers, then the same list again. Every token of the repetition can only be predicted by
    finding it earlier in the context: the quickest way for a small model to learn to copy (induction heads)."""
    words = [rng.choice(LIST_WORDS) if rng.random() < 0.8 else str(rng.randrange(0, 100))
             for _ in range(rng.randrange(3, 9))]
    return f"List: {' '.join(words)}\nAgain: {' '.join(words)}"


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
RECIPE = {"restaurant": 0.12, "product": 0.04, "person": 0.04, "reading": 0.2, "list": 0.15, "arithmetic": 0.22,
          "sql": 0.11, "word_problem": 0.12}


def document(rng: random.Random, kind: str) -> str:
    if kind == "restaurant":
        return " ".join(restaurant_text(rng, restaurant(rng)) for _ in range(rng.randrange(1, 3)))
    if kind == "product":
        return product_text(rng, product(rng))
    if kind == "person":
        return person_text(rng, person(rng))
    return {"reading": reading_text, "list": list_text, "arithmetic": arithmetic_text, "sql": sql_text,
            "word_problem": word_problem_text}[kind](rng)


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
