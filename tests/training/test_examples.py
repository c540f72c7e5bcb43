"""Training data: response-only loss masks, the prefix target, and the deterministic batch plan."""

import json

import numpy as np

from upft_ray.training.examples import build_example
from upft_ray.training.loop import IGNORE_INDEX, batch_plan, collate, micro_batch_indices


def _row(kind, response, finish="length"):
    return {"question_id": "q", "kind": kind, "finish_reason": finish, "response_token_ids": response,
            "train_messages": json.dumps([{"role": "user", "content": "What is 1+1?"}])}


def test_prefix_example_trains_on_t_tokens_plus_eos(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ex = build_example(tok, _row("prefix", [100, 101, 102, 103]), max_length=512)
    assert ex["num_response_tokens"] == 5 and ex["input_ids"][-5:] == [100, 101, 102, 103, tok.eos_token_id]
    full_cut = build_example(tok, _row("full", [7, 8, 9]), max_length=512)
    assert full_cut["input_ids"][-3:] == [7, 8, 9]  # cut by the length limit: no EOS taught
    full_done = build_example(tok, _row("full", [7, 8, tok.eos_token_id], "stop"), max_length=512)
    assert full_done["input_ids"][-3:] == [7, 8, tok.eos_token_id] and full_done["num_response_tokens"] == 3
    short = build_example(tok, _row("prefix", [5] * 50), max_length=ex["num_prompt_tokens"] + 10)
    assert short["truncated"] and short["num_response_tokens"] == 10


def test_collate_masks_prompt_and_padding():
    examples = [{"input_ids": [1, 2, 3, 4], "num_prompt_tokens": 2}, {"input_ids": [5, 6, 7], "num_prompt_tokens": 2}]
    ids, mask, labels = collate(examples, pad_id=0)
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 3, 4], [IGNORE_INDEX, IGNORE_INDEX, 7, IGNORE_INDEX]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]] and ids[1, 3] == 0


def test_batch_plan_partitions_each_epoch_across_ranks():
    plan = batch_plan(103, seed=1, epoch=0, global_batch=8)
    assert plan.shape == (12, 8) and len(set(plan.ravel())) == 96
    assert (plan == batch_plan(103, seed=1, epoch=0, global_batch=8)).all()
    assert not (plan == batch_plan(103, seed=1, epoch=1, global_batch=8)).all()
    parts = [micro_batch_indices(plan[0], r, world=2, micro=2, m=m) for m in range(2) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == sorted(plan[0].tolist())
