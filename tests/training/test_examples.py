"""Training data: response-only loss masks, the prefix target, packing, and the deterministic row plan."""

import json

import numpy as np

from upft_ray.training.examples import build_example, example_parts, tokenize_shard
from upft_ray.training.loop import lr_lambda, micro_batch_rows, step_rows
from upft_ray.training.packing import IGNORE_INDEX as I
from upft_ray.training.packing import ExampleStore, collate_rows, epoch_rows, packing_efficiency


def _row(kind, response, finish="length", text="", answer="2"):
    return {"question_id": "q", "kind": kind, "finish_reason": finish, "response_token_ids": response,
            "train_messages": json.dumps([{"role": "user", "content": "What is 1+1?"}]),
            "response_text": text, "answer": answer}


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


def test_tokenize_shard_writes_a_part_and_counts_dropped_rows(tmp_path, smollm2_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row("prefix", [100, 101]), _row("full", [7, 8, 9]), _row("prefix", [5] * 3)]
    rows[2]["train_messages"] = json.dumps([{"role": "user", "content": "long " * 400}])  # prompt > max_length
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shard-000001.parquet")
    out = tmp_path / "examples" / "part-shard-000001.parquet"
    out.parent.mkdir()
    counts = tokenize_shard(str(tmp_path / "shard-000001.parquet"), str(out), str(smollm2_dir), max_length=256)
    assert counts == {"part": out.name, "rows_in": 3, "incorrect": 0, "examples": 2}
    assert example_parts(out.parent) == [out] and not list(out.parent.glob("*.tmp-*"))
    table = pq.read_table(out)
    assert table.column("kind").to_pylist() == ["prefix", "full"]
    assert table.column("num_response_tokens").to_pylist() == [3, 3]


def test_rft_and_label_filter_keep_correct_solutions_and_cut_prefixes(tmp_path, smollm2_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row("prefix", list(range(100, 120)), "stop", "1 + 1 = 2. The answer is 2."),
            _row("prefix", list(range(100, 120)), "stop", "1 + 1 = 3. The answer is 3."),
            _row("full", [7, 8, 9], "stop", "\\boxed{2}"), _row("full", [7, 8], "length", "so it is 11")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shard-000000.parquet")
    out = tmp_path / "part-shard-000000.parquet"
    counts = tokenize_shard(str(tmp_path / "shard-000000.parquet"), str(out), str(smollm2_dir), max_length=256,
                            prefix_tokens=4, correct_only=True)
    assert counts["rows_in"] == 4 and counts["incorrect"] == 2 and counts["examples"] == 2
    table = pq.read_table(out).to_pylist()
    assert [r["kind"] for r in table] == ["prefix", "full"]
    assert table[0]["num_response_tokens"] == 5 and table[0]["input_ids"][-5:-1] == [100, 101, 102, 103]


def _store(rows):
    """An ExampleStore from (input_ids, num_prompt_tokens) pairs."""
    lengths = [len(ids) for ids, _ in rows]
    return ExampleStore(np.array([t for ids, _ in rows for t in ids], dtype=np.int64),
                        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                        np.array([p for _, p in rows], dtype=np.int64))


def test_collate_masks_prompt_and_padding_and_restarts_positions():
    store = _store([([1, 2, 3, 4], 2), ([5, 6, 7], 2), ([8, 9], 1)])
    ids, pos, labels, ex = collate_rows([[0, 2], [1]], store, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 8, 9], [5, 6, 7, 0, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]  # padding is a segment of its own
    assert labels.tolist() == [[I, I, 3, 4, I, 9], [I, I, 7, I, I, I]]
    assert ex.tolist() == [[0, 0, 0, 0, 1, 1], [2, 2, 2, -1, -1, -1]]


def test_epoch_rows_are_seeded_cover_every_example_once_and_fit():
    lengths = np.random.default_rng(0).integers(40, 90, size=500)
    for pack in (0, 512):
        rows = epoch_rows(lengths, seed=1, epoch=0, pack_length=pack)
        assert rows == epoch_rows(lengths, seed=1, epoch=0, pack_length=pack)
        assert rows != epoch_rows(lengths, seed=1, epoch=1, pack_length=pack)
        assert sorted(i for r in rows for i in r) == list(range(500))
        if pack:
            assert all(lengths[r].sum() <= pack for r in rows)
            assert packing_efficiency(rows, lengths, pack) >= 0.95
        else:
            assert all(len(r) == 1 for r in rows)


def test_micro_batches_partition_each_step_across_ranks():
    rows = [[i] for i in range(16)]
    step = step_rows(rows, 1, rows_per_step=8)
    parts = [micro_batch_rows(step, r, world=2, micro=2, m=m) for m in range(2) for r in range(2)]
    assert sorted(i for p in parts for r in p for i in r) == list(range(8, 16))


def test_lr_schedules():
    constant = lr_lambda("constant", warmup_steps=4, total_steps=20, min_ratio=0.0)
    assert [constant(k) for k in (0, 3, 4, 19)] == [0.25, 1.0, 1.0, 1.0]
    cosine = lr_lambda("cosine", warmup_steps=0, total_steps=11, min_ratio=0.1)
    assert cosine(0) == 1.0 and abs(cosine(10) - 0.1) < 1e-9 and 0.1 < cosine(5) < 1.0
