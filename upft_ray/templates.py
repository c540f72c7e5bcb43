"""Prompts: the UPFT task template and the chat messages each stage sends to the model."""

from __future__ import annotations

# Paper, App. A.1: appended to the question of prefix-tuning rows only, so the model learns that
# a short target is "the initial step", not a whole answer.
UPFT_TASK_TEMPLATE = (
    " Please provide the initial step towards resolving the question. This step may serve as a"
    " foundation but might not encompass the entire solution."
)


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
