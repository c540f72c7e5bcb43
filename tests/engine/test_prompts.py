"""Chat templates: the official UPFT code's templates render as that code renders them, by name."""

import pytest
from transformers import AutoTokenizer

from upft_ray.config import load_config
from upft_ray.config.types import CHAT_TEMPLATES
from upft_ray.engine.prompts import chat_messages, chat_template_text, render_prompt
from upft_ray.training.examples import build_example

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_llama_template_has_an_empty_system_block_without_dates(tokenizer):
    text, ids = render_prompt(tokenizer, chat_messages("What is 2+3?"), "llama-3.1-upft")
    assert text.startswith(tokenizer.bos_token + "<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>")
    assert "Cutting Knowledge Date" not in text and "Today Date" not in text
    assert text.endswith("<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ids == tokenizer.encode(text, add_special_tokens=False)


def test_llama_template_carries_a_system_prompt(tokenizer):
    text, _ = render_prompt(tokenizer, chat_messages("Q?", "Be brief."), "llama-3.1-upft")
    assert "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" in text


def test_r1_template_ends_at_the_assistant_tag(tokenizer):
    text, _ = render_prompt(tokenizer, chat_messages("What is 2+3?"), "deepseek-r1-upft")
    assert text == tokenizer.bos_token + "<｜User｜>What is 2+3?<｜Assistant｜>"
    assert "<think>" not in text


def test_qwen_math_template_adds_the_boxed_system_prompt(tokenizer):
    bare, _ = render_prompt(tokenizer, chat_messages("Q?"), "qwen-math-upft")
    given, _ = render_prompt(tokenizer, chat_messages("Q?", BOXED), "qwen-math-upft")
    assert bare == given == f"<|im_start|>system\n{BOXED}<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


def test_model_means_the_tokenizers_own_template(tokenizer):
    messages = chat_messages("Q?")
    assert render_prompt(tokenizer, messages)[0] == tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                                 tokenize=False)
    assert chat_template_text("model") is None


def test_every_named_template_ships_and_unknown_names_are_refused():
    for name in CHAT_TEMPLATES[1:]:
        assert "add_generation_prompt" in chat_template_text(name)
    with pytest.raises(ValueError, match="not one of"):
        chat_template_text("llama-3.1")
    with pytest.raises(ValueError, match="chat_template"):
        load_config(None, ["sample.engine.chat_template=llama-3.1"])
    assert load_config(None, ["eval.engine.chat_template=deepseek-r1-upft"]).eval.engine.chat_template == \
        "deepseek-r1-upft"


def test_training_prompts_use_the_samplers_template(tokenizer):
    row = {"question_id": "q1", "kind": "full", "train_messages": '[{"role": "user", "content": "Q?"}]',
           "response_token_ids": tokenizer.encode("A.", add_special_tokens=False), "finish_reason": "stop"}
    own = build_example(tokenizer, row, 256)
    r1 = build_example(tokenizer, row, 256, chat_template="deepseek-r1-upft")
    prompt = render_prompt(tokenizer, chat_messages("Q?"), "deepseek-r1-upft")[1]
    assert r1["input_ids"][:r1["num_prompt_tokens"]] == prompt != own["input_ids"][:own["num_prompt_tokens"]]
