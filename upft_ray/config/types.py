"""Field types the pipeline's configs share: finite floats that also take numeric text, text without
NUL, seeds, run names, ``key=value`` overrides, numbers that may instead say a word, and the paper's
task template (the default of ``sample.task_template``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field

SEED_MAX = 2**32 - 1  # NumPy and vLLM seed their generators with 32-bit unsigned integers

# Paper, App. A.1: appended to the question of prefix-tuning rows only, so the model learns that
# a short target is "the initial step", not a whole answer.
UPFT_TASK_TEMPLATE = (
    " Please provide the initial step towards resolving the question. This step may serve as a"
    " foundation but might not encompass the entire solution."
)

_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number_text(value: Any) -> Any:
    """YAML 1.1 reads 5e-6 (no dot) as text: take numeric text as the float it spells."""
    return float(value) if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()) else value


def _no_nul(value: str) -> str:
    if "\x00" in value:  # no path, model id or prompt can hold one
        raise ValueError("contains a NUL character")
    return value


Float = Annotated[float, BeforeValidator(_number_text)]
Text = Annotated[str, AfterValidator(_no_nul)]
# "paper" names the paper's template: its text starts with a space, which a command-line override loses
TaskTemplate = Annotated[str, BeforeValidator(lambda v: UPFT_TASK_TEMPLATE if v == "paper" else v), AfterValidator(_no_nul)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]  # NumPy and vLLM seed with 32-bit unsigned integers


def ranged(number: type, **limits: Any) -> Any:
    """Return ``number`` (int or float) within ``limits`` (ge, le, lt) as a type; a float also takes numeric text.

    The range comes before the text conversion so pydantic states it as a plain JSON-schema range."""
    if number is float:
        return Annotated[float, Field(**limits), BeforeValidator(_number_text)]
    return Annotated[number, Field(**limits)]


def number_or(number: type, *words: str, **limits: Any) -> Any:
    """Return the type of a field taking a ``number`` within ``limits`` (ge, le) or one of ``words``."""
    return Union[Literal[words], ranged(number, **limits)]


def _variant_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"{name!r} is not a run name (letters, digits, _ . -)")
    return name


def _override_text(text: str) -> str:
    if "=" not in text:
        raise ValueError(f"{text!r} is not key=value")
    return text


RunName = Annotated[str, AfterValidator(_variant_name)]
OverrideText = Annotated[str, AfterValidator(_override_text)]

# engine.chat_template: "model" renders with the tokenizer's own template; the others are the official
# UPFT code's templates (upft_ray/engine/prompts.py says how each differs from the model's own).
MODEL_CHAT_TEMPLATE = "model"
CHAT_TEMPLATES = (MODEL_CHAT_TEMPLATE, "llama-3.1-upft", "qwen-math-upft", "deepseek-r1-upft")
