"""Multi-step word problems: a count that changes ``steps`` times (adds, losses, packs, doubling, equal
shares), generated from a seed. They are the bundled ``multistep-*`` sets (``upft_ray.io.bundled_data``).

Why: the arith sets are near ceiling for Qwen2.5-Coder-0.5B-Instruct (~84%) and GSM8K is near the floor
(~12%); a chain of ``steps`` operations (with doubling, equal groups and packs, and counts up to a few
hundred, harder than the arith sets' steps) sets the difficulty with one knob. The shipped sets use
``MULTISTEP_STEPS``, the level whose greedy base accuracy came nearest 50% for that model in a
calibration of candidate levels (``bench/multistep_calibration.py``; its figures are in
``bench/results/multistep_calibration.json``). Every intermediate count is a positive integer, so the
answer is exact; a problem's text fixes its answer.
"""

from __future__ import annotations

import random

# Chosen by the calibration (bench/results/multistep_calibration.json, the entry with the sweep's evaluation
# settings: greedy, the qwen-math-upft template, 512 new tokens): the level nearest 50% for the 0.5B model.
MULTISTEP_STEPS = 2

_NAMES = ["Anna", "Ben", "Carla", "Dev", "Elif", "Femi", "Gus", "Hana", "Iker", "Jude", "Kemal", "Lucia",
          "Milo", "Nadia", "Otto", "Priya"]
_ITEMS = ["beads", "cards", "coins", "eggs", "flowers", "nails", "oranges", "rocks", "seeds", "toy cars"]


def _change(rng: random.Random, value: int, name: str, item: str) -> tuple[str, int] | None:
    """Return one sentence that changes the count ``value`` and the new count, or None when the drawn
    kind of change does not fit ``value`` (nothing to give away, too large to multiply, no divisor)."""
    kind = rng.choice(["add", "sub", "packs", "mul", "div"])
    if kind == "add":
        b = rng.randint(3, 40)
        return rng.choice([f"Then {name} finds {b} more {item}.", f"A friend gives {name} {b} {item}."]), value + b
    if kind == "sub":
        if value < 4:
            return None
        b = rng.randint(1, value - 2)
        return rng.choice([f"{name} gives away {b} {item}.", f"{name} loses {b} of the {item}."]), value - b
    if kind == "packs":
        k, n = rng.randint(2, 6), rng.randint(3, 12)
        return f"{name} buys {k} packs of {item} with {n} {item} in each pack.", value + k * n
    if kind == "mul":
        if value > 80:
            return None
        m = rng.choice([2, 3])
        return f"The number of {item} {name} has {'doubles' if m == 2 else 'triples'}.", value * m
    divisors = [d for d in range(2, 7) if value % d == 0 and value // d >= 2]
    if not divisors:
        return None
    d = rng.choice(divisors)
    return f"{name} splits the {item} into {d} equal groups and keeps one group.", value // d


def multistep_problem(rng: random.Random, steps: int = MULTISTEP_STEPS) -> tuple[str, int]:
    """Return a word problem whose count changes ``steps`` times, and its integer answer."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(5, 60)
    sentences = [f"{name} has {value} {item}."]
    while len(sentences) <= steps:
        change = _change(rng, value, name, item)
        if change is not None:
            sentences.append(change[0])
            value = change[1]
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), value
