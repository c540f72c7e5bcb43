"""Prompts: the chat messages each stage sends to the model, rendered with a chat template.

The template is the model tokenizer's own (``engine.chat_template: model``, the default) or one of the
official UPFT code's templates (``inference/chat_template.py`` of 1KE-JI/UPFT at 05f4027), shipped as
``upft_ray/data/chat_templates/NAME.jinja`` and named in ``upft_ray.config.types.CHAT_TEMPLATES``:

- ``llama-3.1-upft``: Llama-3.1's template with an empty system block (no "Cutting Knowledge Date /
  Today Date" lines, which the tokenizer's own template writes);
- ``qwen-math-upft``: Qwen2.5-Math's, with the boxed system prompt when none is given;
- ``deepseek-r1-upft``: R1-Distill's, ending at the assistant tag (the tokenizer's own, in later
  releases, ends with an opening ``<think>\\n``, so prefix tokens would be counted from another place).

The UPFT task template (a config value) is ``upft_ray.config.types.UPFT_TASK_TEMPLATE``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from upft_ray.config.types import CHAT_TEMPLATES, MODEL_CHAT_TEMPLATE

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "data" / "chat_templates"


def chat_messages(question: str, system_prompt: str = "", suffix: str = "") -> list[dict]:
    """Return the chat messages for ``question`` (+ ``suffix``), with the system prompt if any."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question + suffix})
    return messages


@lru_cache(maxsize=None)
def chat_template_text(name: str) -> str | None:
    """Return the Jinja text of the named chat template (None for ``model``: the tokenizer's own).

    Raises ValueError for a name not in CHAT_TEMPLATES."""
    if name == MODEL_CHAT_TEMPLATE:
        return None
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"chat template {name!r} is not one of {list(CHAT_TEMPLATES)}")
    return (TEMPLATE_DIR / f"{name}.jinja").read_text()


def render_prompt(tokenizer, messages: list[dict], chat_template: str = MODEL_CHAT_TEMPLATE) -> tuple[str, list[int]]:
    """Return (text, token ids) of ``messages`` under ``chat_template`` (a CHAT_TEMPLATES name).

    The text already holds any BOS the template writes, so it is encoded without special tokens
    (encoding it with them would double the BOS on Llama-style tokenizers)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         chat_template=chat_template_text(chat_template))
    return text, tokenizer.encode(text, add_special_tokens=False)
