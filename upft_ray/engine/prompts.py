"""Prompts: the chat messages each stage sends to the model, rendered with the model's chat template.

The UPFT task template (a config value) is ``upft_ray.config.types.UPFT_TASK_TEMPLATE``."""

from __future__ import annotations


def chat_messages(question: str, system_prompt: str = "", suffix: str = "") -> list[dict]:
    """Return the chat messages for ``question`` (+ ``suffix``), with the system prompt if any."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question + suffix})
    return messages


def render_prompt(tokenizer, messages: list[dict]) -> tuple[str, list[int]]:
    """Return (text, token ids) of ``messages`` under the tokenizer's chat template.

    The text already holds any BOS the template writes, so it is encoded without special tokens
    (encoding it with them would double the BOS on Llama-style tokenizers)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text, tokenizer.encode(text, add_special_tokens=False)
