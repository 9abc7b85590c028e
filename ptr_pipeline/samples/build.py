"""Regenerate the bundled samples (deterministic). Run: python -m ptr_pipeline.samples.build"""

import json
import random
from pathlib import Path

from ptr_pipeline.samples import SAMPLES_DIR

TOPICS = [
    "photosynthesis",
    "compound interest",
    "the water cycle",
    "machine learning",
    "black holes",
    "the French Revolution",
    "vaccines",
    "climate change",
    "blockchains",
    "the human heart",
    "supply and demand",
    "plate tectonics",
    "recursion",
    "the printing press",
    "jazz music",
    "volcanoes",
    "democracy",
    "DNA",
    "electric cars",
    "sleep",
    "the Roman Empire",
    "inflation",
    "honeybees",
    "the internet",
    "gravity",
    "coral reefs",
    "public speaking",
    "chess openings",
]
AUDIENCES = ["ten-year-old", "high school student", "busy manager", "retired engineer"]
ACTIVITIES = [
    "learning a new language",
    "saving money each month",
    "training for a 5k run",
    "keeping a vegetable garden",
    "preparing for a job interview",
    "reducing screen time",
    "organizing a small conference",
    "writing a novel",
    "moving to a new city",
    "cooking for guests",
]
PAIRS = [
    ("a virus", "a bacterium"),
    ("weather", "climate"),
    ("a list", "a tuple in Python"),
    ("stocks", "bonds"),
    ("mitosis", "meiosis"),
    ("TCP", "UDP"),
    ("a lake", "a sea"),
    ("empathy", "sympathy"),
    ("a comet", "an asteroid"),
    ("renting", "buying a home"),
]
CODE_TASKS = [
    "reverses a string",
    "checks whether a number is prime",
    "merges two sorted lists",
    "counts the words in a text",
    "returns the n-th Fibonacci number",
    "removes duplicates from a list while keeping order",
    "converts Celsius to Fahrenheit",
    "finds the largest element of a list",
    "validates an email address with a regex",
]
TEMPLATES = [
    "Explain {topic} to a {audience} in three short paragraphs.",
    "Write a short poem about {topic}.",
    "Summarize what everyone should know about {topic} in five bullet points.",
    "What are common misconceptions about {topic}?",
    "List five practical tips for {activity}.",
    "Give me a step-by-step plan for {activity}.",
    "What are the main differences between {a} and {b}?",
    "Write a Python function that {code}. Include a docstring.",
    "Draft a polite email to my landlord about {activity}.",
]


def queries(rng: random.Random) -> list[dict]:
    out = set()
    for _ in range(5000):
        t = rng.choice(TEMPLATES)
        a, b = rng.choice(PAIRS)
        out.add(
            t.format(
                topic=rng.choice(TOPICS),
                audience=rng.choice(AUDIENCES),
                activity=rng.choice(ACTIVITIES),
                a=a,
                b=b,
                code=rng.choice(CODE_TASKS),
            )
        )
        if len(out) >= 300:
            break
    return [{"instruction": q} for q in sorted(out)]


NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jon"]


def gsm8k(rng: random.Random, n: int = 40) -> list[dict]:
    rows = []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        kind = i % 4
        a, b, c = rng.randint(2, 12), rng.randint(2, 9), rng.randint(1, 20)
        if kind == 0:
            q = f"{name} buys {a} boxes with {b} pencils in each box and gives away {c} pencils. How many pencils does {name} have left?"
            ans, work = (
                a * b - c,
                f"{name} buys {a} * {b} = {a * b} pencils. {a * b} - {c} = {a * b - c}.",
            )
        elif kind == 1:
            q = f"A baker makes {a} trays of {b} cookies and then bakes {c} more cookies. How many cookies are there?"
            ans, work = (
                a * b + c,
                f"The trays hold {a} * {b} = {a * b} cookies. {a * b} + {c} = {a * b + c}.",
            )
        elif kind == 2:
            total = a * b
            q = f"{name} shares {total} stickers equally among {b} friends. How many stickers does each friend get?"
            ans, work = a, f"{total} / {b} = {a}."
        else:
            q = f"{name} reads {a} pages a day for {b} days, then {c} pages on the last day. How many pages did {name} read?"
            ans, work = a * b + c, f"{a} * {b} = {a * b} pages, plus {c} is {a * b + c}."
        rows.append({"question": q, "answer": f"{work}\n#### {ans}"})
    return rows


CATEGORIES = {
    "mammal": (
        ["whale", "bat", "horse", "dolphin", "mouse"],
        ["shark", "eagle", "frog", "salmon", "lizard", "snail"],
    ),
    "planet": (
        ["Mars", "Venus", "Jupiter", "Saturn"],
        ["the Moon", "the Sun", "Pluto", "Halley's Comet", "Sirius"],
    ),
    "metal": (
        ["copper", "iron", "aluminum", "gold"],
        ["wood", "glass", "rubber", "sulfur", "plastic"],
    ),
    "renewable energy source": (
        ["wind", "sunlight", "flowing water"],
        ["coal", "oil", "natural gas", "peat"],
    ),
    "gas at room temperature": (
        ["oxygen", "nitrogen", "helium", "carbon dioxide"],
        ["mercury", "iron", "water", "salt", "sugar"],
    ),
    "producer in a food chain": (
        ["grass", "algae", "an oak tree"],
        ["a rabbit", "a hawk", "a fox", "a mushroom"],
    ),
}


def arc(rng: random.Random, n: int = 32) -> list[dict]:
    rows, labels = [], ["A", "B", "C", "D"]
    cats = sorted(CATEGORIES)
    for i in range(n):
        cat = cats[i % len(cats)]
        yes, no = CATEGORIES[cat]
        options = [rng.choice(yes), *rng.sample(no, 3)]
        rng.shuffle(options)
        key = labels[options.index(next(o for o in options if o in yes))]
        rows.append(
            {
                "id": f"ptr-arc-{i:03d}",
                "question": f"Which of these is a {cat}?",
                "choices": {"text": options, "label": labels},
                "answerKey": key,
            }
        )
    return rows


CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Peru": "Lima",
    "Egypt": "Cairo",
    "Norway": "Oslo",
    "India": "New Delhi",
}


def mmlu(rng: random.Random, n: int = 32) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 2 == 0:
            country = sorted(CAPITALS)[(i // 2) % len(CAPITALS)]
            right = CAPITALS[country]
            wrong = rng.sample([c for c in CAPITALS.values() if c != right], 3)
            q, subject = f"What is the capital of {country}?", "high_school_geography"
        else:
            a, b = rng.randint(3, 15), rng.randint(3, 15)
            right = str(a * b)
            wrong = [str(a * b + d) for d in rng.sample([-2, -1, 1, 2, a, b], 3)]
            q, subject = f"What is {a} multiplied by {b}?", "elementary_mathematics"
        choices = [right, *wrong]
        rng.shuffle(choices)
        rows.append(
            {"question": q, "subject": subject, "choices": choices, "answer": choices.index(right)}
        )
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    _write(SAMPLES_DIR / "queries.jsonl", queries(random.Random(0)))
    _write(SAMPLES_DIR / "gsm8k.jsonl", gsm8k(random.Random(1)))
    _write(SAMPLES_DIR / "arc.jsonl", arc(random.Random(2)))
    _write(SAMPLES_DIR / "mmlu.jsonl", mmlu(random.Random(3)))


if __name__ == "__main__":
    main()
