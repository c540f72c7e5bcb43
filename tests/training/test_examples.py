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
    assert counts == {"part": out.name, "rows_in": 3, "incorrect": 0, "examples": 2, "failed": 0}
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


# --- Ablation knobs on the token level: prefix_eos, the task template, the loss normaliser ----------

import pytest  # noqa: E402

from upft_ray.training.examples import IGNORE_INDEX, example_labels, loss_tokens  # noqa: E402


@pytest.mark.parametrize("mode,tail,labelled", [
    ("loss", [True], True),       # t tokens + EOS, the EOS is a target (the paper)
    ("no_loss", [True], False),   # t tokens + EOS as input, the EOS is no target
    ("none", [], None),           # t tokens, no EOS at all
])
def test_prefix_eos_sets_what_a_prefix_row_ends_with(smollm2_dir, mode, tail, labelled):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    eos = tok.eos_token_id
    for response in ([100, 101, 102, 103], [100, 101, 102, eos]):  # the second stopped by itself within t
        ex = build_example(tok, _row("prefix", response), max_length=512, prefix_eos=mode)
        p = ex["num_prompt_tokens"]
        body = response[:3] + ([] if response[-1] == eos else [103])
        assert ex["input_ids"][p:] == body + [eos] * len(tail)
        labels = example_labels(ex)
        assert labels[:p] == [IGNORE_INDEX] * p and labels[p:p + len(body)] == body
        if labelled is not None:
            assert labels[-1] == (eos if labelled else IGNORE_INDEX)
        assert loss_tokens(ex) == len(body) + (1 if labelled else 0) == sum(x != IGNORE_INDEX for x in labels)
    # full rows are never touched by the knob
    full = build_example(tok, _row("full", [7, 8, eos], "stop"), max_length=512, prefix_eos=mode)
    assert full["input_ids"][-3:] == [7, 8, eos] and example_labels(full)[-1] == eos
    with pytest.raises(ValueError, match="prefix_eos"):
        build_example(tok, _row("prefix", [1]), max_length=512, prefix_eos="sometimes")


def test_no_loss_eos_is_masked_in_the_training_batch_and_the_normaliser(tmp_path, smollm2_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from upft_ray.training.objective import global_normaliser

    pq.write_table(pa.Table.from_pylist([_row("prefix", [100, 101]), _row("full", [7, 8, 9])]),
                   tmp_path / "shard-000000.parquet")
    parts = {}
    for mode in ("loss", "no_loss"):
        out = tmp_path / f"part-{mode}.parquet"
        tokenize_shard(str(tmp_path / "shard-000000.parquet"), str(out), str(smollm2_dir), 256, prefix_eos=mode)
        parts[mode] = ExampleStore.from_parts([out])
    loss, no_loss = parts["loss"], parts["no_loss"]
    assert loss.lengths.tolist() == no_loss.lengths.tolist()  # same tokens in the row...
    assert no_loss.loss_tokens.tolist() == [2, 3] and loss.loss_tokens.tolist() == [3, 3]  # ...one target fewer
    assert global_normaliser([[0, 1]], no_loss, "token") == 5.0
    _, _, labels_loss, _ = collate_rows([[0]], loss, pad_id=0)
    _, _, labels_masked, _ = collate_rows([[0]], no_loss, pad_id=0)
    n = int(loss.lengths[0])
    assert labels_loss[0, n - 1].item() != I and labels_masked[0, n - 1].item() == I
    assert labels_loss[0, :n - 1].tolist() == labels_masked[0, :n - 1].tolist()


def test_parts_written_before_masked_tails_existed_still_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"input_ids": [[1, 2, 3, 4]], "num_prompt_tokens": [2]}), tmp_path / "old.parquet")
    store = ExampleStore.from_parts([tmp_path / "old.parquet"])
    assert store.loss_tokens.tolist() == [2] and store.tails.tolist() == [0]


def test_empty_task_template_trains_prefix_rows_on_the_bare_question(smollm2_dir):
    from transformers import AutoTokenizer

    from upft_ray.config import load_config
    from upft_ray.config.types import UPFT_TASK_TEMPLATE
    from upft_ray.sampling.requests import build_requests

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(20)]
    for template, expected in ((None, UPFT_TASK_TEMPLATE), ("''", "")):
        overrides = ["sample.structure_ratio=0.3"] + ([f"sample.task_template={template}"] if template else [])
        cfg = load_config(None, overrides)
        requests = build_requests(rows, cfg.sample, cfg.seed)
        prefix = [r for r in requests if r["kind"] == "prefix"]
        assert prefix and all(r["task_template"] == expected for r in prefix)
        for r in prefix:
            ex = build_example(tok, {**_row("prefix", [100]), "train_messages": r["train_messages"]}, 512)
            prompt = tok.decode(ex["input_ids"][:ex["num_prompt_tokens"]])
            assert (UPFT_TASK_TEMPLATE.strip() in prompt) == bool(expected)
            # without the template a prefix row's prompt is exactly the prompt the model is sampled with
            assert (r["train_messages"] == r["messages"]) == (not expected)


def test_the_training_stage_builds_examples_with_the_configured_prefix_eos(tmp_path, tiny_model_dir, ray_local):
    import json as _json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from upft_ray.config import load_config
    from upft_ray.io.manifests import write_json_atomic
    from upft_ray.training.stage import prepare_examples

    run = tmp_path / "run"
    (run / "sample" / "shards").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([_row("prefix", [100, 101]), _row("full", [7, 8, 9])]),
                   run / "sample" / "shards" / "shard-000000.parquet")
    write_json_atomic(run / "sample" / "manifest.json", {"config_hash": "h", "prefix_tokens": 8,
                                                         "config": {"method": "upft", "prefix_tokens": 8}})
    ends = {}
    for mode in ("loss", "none", "no_loss"):  # one run dir: a changed knob must rebuild the examples
        cfg = load_config(None, [f"run_dir={run}", f"model={tiny_model_dir}", f"train.prefix_eos={mode}"])
        out_dir, counts = prepare_examples(cfg, str(tiny_model_dir))
        table = pq.read_table(sorted(out_dir.glob("part-*.parquet"))).to_pylist()
        ends[mode] = (table[0]["input_ids"][-1], table[0].get("num_masked_tail"), counts["tokens_tuned"])
    eos = _json.loads((tiny_model_dir / "config.json").read_text())["eos_token_id"]
    assert ends["loss"] == (eos, 0, 3 + 3) and ends["none"] == (101, 0, 2 + 3) and ends["no_loss"] == (eos, 1, 2 + 3)


def test_a_row_whose_example_cannot_be_built_is_rejected_with_its_error_and_the_rest_kept(tmp_path, smollm2_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from upft_ray.training.examples import rejected_part

    good = _row("prefix", [100, 101])
    bad = [  # whatever a row holds: each fails in another step of building its example
        {**good, "question_id": "not-json", "train_messages": "{not json"},
        {**good, "question_id": "not-messages", "train_messages": json.dumps({"role": "user"})},
        {**good, "question_id": "bad-token", "response_token_ids": [1, -7, 2 ** 40]},
        {**good, "question_id": "no-tokens", "response_token_ids": None},
    ]
    pq.write_table(pa.Table.from_pylist([good, *bad, good]), tmp_path / "shard-000002.parquet")
    out = tmp_path / "examples" / "part-shard-000002.parquet"
    out.parent.mkdir()
    counts = tokenize_shard(str(tmp_path / "shard-000002.parquet"), str(out), str(smollm2_dir), max_length=256)
    assert counts["rows_in"] == 6 == counts["examples"] + counts["failed"] and counts["examples"] == 2
    rejected = pq.read_table(rejected_part(out)).to_pylist()
    assert [json.loads(r["raw"])["id"] for r in rejected] == [b["question_id"] for b in bad]
    assert all(r["reason"].startswith("example_build_error: ") for r in rejected)
    assert [r["line"] for r in rejected] == [1, 2, 3, 4]
