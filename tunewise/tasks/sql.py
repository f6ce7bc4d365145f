"""`sql`: schema (CREATE TABLE) + question -> SQL, scored by execution on a generated SQLite database.

    Schema: CREATE TABLE people (name TEXT, job TEXT, city TEXT, age INTEGER);
    Question: Which pilots live in Oslo?
    SQL: SELECT name FROM people WHERE job = 'pilot' AND city = 'Oslo';

The database (db.sqlite next to the splits) is built from the seed with rows over the corpus vocabularies; a
question whose reference query returns nothing (or a zero count) is redrawn, so a wrong query rarely matches by
accident. Half the question templates are the ones the tiny base read in pre-training, half are new shapes
(GROUP BY, ORDER BY ... LIMIT, DISTINCT, MAX/SUM, two conditions).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path
from typing import Any

from tunewise.fileio import atomic_write_bytes
from tunewise.tasks.base import TaskExample, TaskSpec
from tunewise.zoo.corpus import (
    AREAS,
    BRANDS,
    CATEGORIES,
    CITIES,
    FIRST_NAMES,
    FOODS,
    JOBS,
    LAST_NAMES,
    NAME_FIRST,
    NAME_SECOND,
    PRICES,
    PRODUCT_NAMES,
    RATINGS,
    SCHEMAS,
)

DB_FILE = "db.sqlite"
ROWS = {"restaurants": 48, "products": 40, "people": 48}
MAX_REDRAWS = 200
FIXED_QUESTIONS = {"Which restaurant has the most seats?", "How many restaurants are there for each rating?",
                   "What is the most expensive product?", "What is the average age of the people?",
                   "Who is the youngest person?", "How many people live in each city?"}


def _rows(rng: random.Random) -> dict[str, list[tuple]]:
    names = rng.sample([f"{a} {b}" for a in NAME_FIRST for b in NAME_SECOND], ROWS["restaurants"])
    restaurants = [(n, rng.choice(FOODS), rng.choice(RATINGS), rng.choice(PRICES), rng.choice(AREAS),
                    rng.randrange(10, 90)) for n in names]
    products = [(rng.choice(PRODUCT_NAMES), rng.choice(CATEGORIES), rng.choice(BRANDS), rng.randrange(5, 200),
                 rng.randrange(1, 6)) for _ in range(ROWS["products"])]
    people_names = rng.sample([f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES], ROWS["people"])
    people = [(n, rng.choice(JOBS), rng.choice(CITIES), rng.randrange(20, 70)) for n in people_names]
    return {"restaurants": restaurants, "products": products, "people": people}


def build_database(seed: int) -> sqlite3.Connection:
    """An in-memory database with the three SCHEMAS tables, populated from `seed`."""
    conn = sqlite3.connect(":memory:")
    for table, rows in _rows(random.Random(seed * 7919 + 17)).items():
        conn.execute(SCHEMAS[table])
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.commit()
    return conn


def write_database(out: Path, seed: int) -> dict[str, Any]:
    conn = build_database(seed)
    atomic_write_bytes(out / DB_FILE, conn.serialize())
    conn.close()
    return {"db": DB_FILE}


def _question(rng: random.Random, conn: sqlite3.Connection) -> tuple[str, str, str]:
    """(table, question, query); values that name rows are drawn from the database so lookups can succeed."""
    table = rng.choice(list(SCHEMAS))
    if table == "restaurants":
        food, area, rating, price = rng.choice(FOODS), rng.choice(AREAS), rng.choice(RATINGS), rng.choice(PRICES)
        n = rng.randrange(10, 90)
        name = rng.choice([r[0] for r in conn.execute("SELECT name FROM restaurants")])
        q = rng.choice([
            (f"Which restaurants serve {food} food?", f"SELECT name FROM restaurants WHERE food = '{food}';"),
            (f"How many restaurants are in the {area} area?",
             f"SELECT COUNT(*) FROM restaurants WHERE area = '{area}';"),
            (f"List the {food} restaurants with a {rating} rating.",
             f"SELECT name FROM restaurants WHERE food = '{food}' AND rating = '{rating}';"),
            (f"Which restaurants have more than {n} seats?", f"SELECT name FROM restaurants WHERE seats > {n};"),
            (f"Which {price} restaurants are in the {area} area?",
             f"SELECT name FROM restaurants WHERE price = '{price}' AND area = '{area}';"),
            (f"What is the total number of seats in {food} restaurants?",
             f"SELECT SUM(seats) FROM restaurants WHERE food = '{food}';"),
            ("Which restaurant has the most seats?", "SELECT name FROM restaurants ORDER BY seats DESC LIMIT 1;"),
            (f"What food does {name} serve?", f"SELECT food FROM restaurants WHERE name = '{name}';"),
            ("How many restaurants are there for each rating?",
             "SELECT rating, COUNT(*) FROM restaurants GROUP BY rating;"),
            (f"List the restaurants in the {area} area from most to fewest seats.",
             f"SELECT name FROM restaurants WHERE area = '{area}' ORDER BY seats DESC;"),
        ])
    elif table == "products":
        cat, brand, p, s = rng.choice(CATEGORIES), rng.choice(BRANDS), rng.randrange(10, 190), rng.randrange(2, 6)
        q = rng.choice([
            (f"What is the average price of a {cat}?", f"SELECT AVG(price) FROM products WHERE category = '{cat}';"),
            (f"Which products does {brand} make?", f"SELECT name FROM products WHERE brand = '{brand}';"),
            (f"Which products cost less than {p} dollars?", f"SELECT name FROM products WHERE price < {p};"),
            ("What is the most expensive product?", "SELECT name FROM products ORDER BY price DESC LIMIT 1;"),
            (f"How many {cat} products have {s} stars or more?",
             f"SELECT COUNT(*) FROM products WHERE category = '{cat}' AND stars >= {s};"),
            (f"What is the cheapest {cat}?",
             f"SELECT name FROM products WHERE category = '{cat}' ORDER BY price ASC LIMIT 1;"),
            (f"Which brands sell a {cat}?", f"SELECT DISTINCT brand FROM products WHERE category = '{cat}';"),
            (f"What is the highest price of a {brand} product?",
             f"SELECT MAX(price) FROM products WHERE brand = '{brand}';"),
        ])
    else:
        job, city, age = rng.choice(JOBS), rng.choice(CITIES), rng.randrange(20, 70)
        name = rng.choice([r[0] for r in conn.execute("SELECT name FROM people")])
        q = rng.choice([
            (f"Who lives in {city}?", f"SELECT name FROM people WHERE city = '{city}';"),
            (f"How many people work as a {job}?", f"SELECT COUNT(*) FROM people WHERE job = '{job}';"),
            (f"Who is older than {age}?", f"SELECT name FROM people WHERE age > {age};"),
            ("What is the average age of the people?", "SELECT AVG(age) FROM people;"),
            (f"Which people work as a {job} in {city}?",
             f"SELECT name FROM people WHERE job = '{job}' AND city = '{city}';"),
            (f"How old is {name}?", f"SELECT age FROM people WHERE name = '{name}';"),
            ("Who is the youngest person?", "SELECT name FROM people ORDER BY age ASC LIMIT 1;"),
            ("How many people live in each city?", "SELECT city, COUNT(*) FROM people GROUP BY city;"),
            (f"What is the average age of the people who work as a {job}?",
             f"SELECT AVG(age) FROM people WHERE job = '{job}';"),
        ])
    return table, *q


def _informative(rows: list[tuple]) -> bool:
    return bool(rows) and rows != [(0,)] and rows != [(None,)]


def held_out(query: str) -> bool:
    """A fixed quarter of all (template, values) combinations is reserved for validation and test."""
    return int(hashlib.sha256(query.encode()).hexdigest(), 16) % 4 == 0


def example(rng: random.Random, conn: sqlite3.Connection, split: str = "train") -> TaskExample:
    """Train draws only non-reserved queries and evaluation splits only reserved ones, so a test question is
    never a training question: the model has to carry the question's values into the query, not recall it.
    The few questions without values (FIXED_QUESTIONS) are training-only for the same reason."""
    evaluation = split != "train"
    for _ in range(MAX_REDRAWS):
        table, question, query = _question(rng, conn)
        if question in FIXED_QUESTIONS:
            ok = not evaluation
        else:
            ok = held_out(query) == evaluation
        if ok and _informative(conn.execute(query).fetchall()):
            break
    return TaskExample(f"Schema: {SCHEMAS[table]}\nQuestion: {question}\nSQL:", f" {query}")


def make_examples(rng: random.Random, n: int, ctx: dict[str, Any]) -> list[TaskExample]:
    conn = build_database(ctx.get("seed", 0))
    try:
        return [example(rng, conn, ctx.get("split", "train")) for _ in range(n)]
    finally:
        conn.close()


SPEC = TaskSpec(
    name="sql",
    description="CREATE TABLE schema + question -> SQL; execution accuracy on a generated SQLite database",
    scorer="sql", stop=["\n"], max_new_tokens=48, make_examples=make_examples,
    prepare=write_database,
    instruction="Write one SQLite query that answers the question over the schema. Answer with the SQL query "
                "only, on one line.",
)
