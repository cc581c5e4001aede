"""A small general-instruction set (Alpaca format) to mix into Harbor SFT, generated with correct answers.

Short items (arithmetic, sorting, rewriting, counting, definitions) keep the model's general skills exercised
while it specialises (the guide's 10-30% broad data).
"""

from __future__ import annotations

import random
from collections.abc import Callable

SUBJECTS = ("The cat", "My neighbour", "A small boat", "The old library", "Our team", "The river", "A young chef",
            "The teacher", "A tired runner")
VERBS = ("sleeps near", "paints", "crosses", "opens before", "visits", "follows", "cooks for", "watches")
OBJECTS = ("the window", "the bridge", "the market", "the station", "the garden", "the students", "the guests",
           "the harbor")
GLOSSARY = {
    "photosynthesis": "the process plants use to turn light, water and carbon dioxide into sugar and oxygen.",
    "gravity": "the force that pulls objects with mass toward each other.",
    "democracy": "a system of government in which citizens choose their leaders by voting.",
    "inflation": "a general rise in prices that lowers what money can buy.",
    "ecosystem": "a community of living things interacting with their environment.",
    "algorithm": "a step-by-step procedure for solving a problem.",
    "metaphor": "a figure of speech that describes something as if it were something else.",
    "volcano": "an opening in the earth's crust through which lava, ash and gases escape.",
    "vaccine": "a preparation that trains the immune system to recognise a disease.",
    "budget": "a plan for how money will be earned and spent.",
    "habitat": "the natural home of an animal or plant.",
    "synonym": "a word that means the same or nearly the same as another word.",
    "atom": "the smallest unit of a chemical element.",
    "erosion": "the gradual wearing away of rock or soil by wind, water or ice.",
    "recipe": "a set of instructions for preparing a dish.",
    "invoice": "a document that lists goods or services provided and the amount owed.",
    "password": "a secret word or phrase used to prove who you are.",
    "receipt": "a written record that a payment was made.",
    "orbit": "the curved path of an object around a star, planet or moon.",
    "thermometer": "an instrument that measures temperature.",
}
PLURALS = {"child": "children", "mouse": "mice", "foot": "feet", "tooth": "teeth", "person": "people",
           "woman": "women", "goose": "geese", "leaf": "leaves", "knife": "knives", "box": "boxes",
           "city": "cities", "bus": "buses", "cactus": "cacti", "sheep": "sheep", "wolf": "wolves"}
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for 0-99.

    >>> number_words(42), number_words(13), number_words(70)
    ('forty-two', 'thirteen', 'seventy')
    """
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."


def _nums(rng: random.Random, k: int) -> list[int]:
    return rng.sample(range(1, 100), k)


def _add(r):
    a, b = r.randint(2, 999), r.randint(2, 999)
    return f"What is {a} + {b}?", "", f"{a} + {b} = {a + b}."


def _sub(r):
    a, b = sorted((r.randint(2, 999), r.randint(2, 999)), reverse=True)
    return f"Subtract {b} from {a}.", "", f"{a} - {b} = {a - b}."


def _mul(r):
    a, b = r.randint(2, 30), r.randint(2, 30)
    return f"What is {a} times {b}?", "", f"{a} times {b} is {a * b}."


def _sort(r):
    xs = _nums(r, r.randint(4, 7))
    return "Sort these numbers from smallest to largest.", ", ".join(map(str, xs)), ", ".join(map(str, sorted(xs)))


def _largest(r):
    xs = _nums(r, r.randint(3, 6))
    return "Which number is the largest?", ", ".join(map(str, xs)), f"The largest number is {max(xs)}."


def _upper(r):
    s = _sentence(r)
    return "Rewrite this sentence in capital letters.", s, s.upper()


def _reverse(r):
    s = _sentence(r)
    return "Reverse the order of the words in this sentence.", s, " ".join(reversed(s[:-1].split())) + "."


def _count(r):
    s = _sentence(r)
    return "How many words are in this sentence?", s, f"There are {len(s.split())} words."


def _evens(r):
    k = r.randint(3, 12)
    return f"List the first {k} even numbers.", "", ", ".join(str(2 * i) for i in range(1, k + 1))


def _define(r):
    term = r.choice(sorted(GLOSSARY))
    return f"Define '{term}' in one sentence.", "", f"{term.capitalize()} is {GLOSSARY[term]}"


def _km(r):
    x = r.randint(1, 60) / r.choice((1, 2, 4))
    return f"Convert {x:g} kilometres to metres.", "", f"{x:g} km is {x * 1000:g} metres."


def _plural(r):
    noun = r.choice(sorted(PLURALS))
    return f"What is the plural of '{noun}'?", "", f"The plural of '{noun}' is '{PLURALS[noun]}'."


def _alpha(r):
    words = r.sample(sorted(GLOSSARY) + sorted(PLURALS), r.randint(4, 6))
    return "Put these words in alphabetical order.", ", ".join(words), ", ".join(sorted(words))


def _words(r):
    n = r.randint(0, 99)
    return f"Write the number {n} in words.", "", f"{n} is written '{number_words(n)}'."


TASKS: tuple[Callable[[random.Random], tuple[str, str, str]], ...] = (
    _add, _sub, _mul, _sort, _largest, _upper, _reverse, _count, _evens, _define, _km, _plural, _alpha, _words)


def make_general(rng: random.Random, n: int) -> list[dict[str, str]]:
    """`n` distinct Alpaca records {instruction, input, output}, cycling through the task kinds.

    >>> make_general(random.Random(0), 1)[0]["instruction"]
    'What is 866 + 396?'
    """
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, str]] = []
    for i in range(n * 50):
        if len(out) == n:
            break
        instruction, inp, output = TASKS[i % len(TASKS)](rng)
        if (instruction, inp) not in seen:
            seen.add((instruction, inp))
            out.append({"instruction": instruction, "input": inp, "output": output})
    assert len(out) == n, f"could only make {len(out)} distinct general items of {n}"
    return out
