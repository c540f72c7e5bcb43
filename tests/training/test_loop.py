"""The step plan: which rows each optimizer step takes when an epoch's rows fill no whole last step (epoch_tail)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from loop_helpers import make_loop_config, synthetic, torchrun  # noqa: F401 (fixtures)

from upft_ray.config import TrainConfig, load_config
from upft_ray.config.hashing import train_config_hash
from upft_ray.training import stage
from upft_ray.training.loop import StepRows, plan_epochs, step_rows
from upft_ray.training.objective import global_normaliser
from upft_ray.training.packing import ExampleStore, epoch_rows

LIMO, BATCH, EPOCHS, SEED = 817, 64, 3, 42  # LIMO's questions, the official global batch, the paper's epochs


def _trained(plan, lengths, pack_length: int) -> list[list[tuple[int, int]]]:
    """Return, per step, the (epoch, example) pairs it trains on; check StepRows, read as a run reads it, gives
    those examples in that order."""
    rows_of, out = StepRows(plan, lengths, SEED, pack_length), []
    for step in range(plan.total_steps):
        pairs = [(e, i) for e, start, stop in plan.spans(step)
                 for row in epoch_rows(lengths, SEED, e, pack_length)[start:stop] for i in row]
        rows = rows_of(step)
        assert len(rows) == plan.rows_per_step and [i for row in rows for i in row] == [i for _, i in pairs]
        out.append(pairs)
    return out


def test_drop_trains_whole_blocks_of_each_epoch_and_drops_every_epoch_tail():
    lengths = np.ones(LIMO, dtype=np.int64)
    plan = plan_epochs(lengths, SEED, EPOCHS, 0, BATCH)  # the default: drop
    assert plan.tail == "drop" and plan.total_steps == 3 * 12 and plan.rows_trained == 3 * 768
    assert plan.dropped_per_epoch() == [49, 49, 49] and plan.rows_trained + 3 * 49 == 3 * LIMO
    steps = _trained(plan, lengths, 0)
    assert all(len({e for e, _ in step}) == 1 for step in steps)  # no step mixes epochs
    seen = Counter(pair for step in steps for pair in step)
    assert max(seen.values()) == 1
    for e in range(EPOCHS):  # each epoch trains its first 768 rows in its seeded order, not the last 49
        order = [row[0] for row in epoch_rows(lengths, SEED, e, 0)]
        assert {i for (ep, i) in seen if ep == e} == set(order[:768])
    assert [plan.epoch_of(k) for k in (0, 11, 12, 35)] == [0, 0, 1, 2]


def test_carry_joins_each_epoch_tail_to_the_next_epochs_first_step():
    lengths = np.ones(LIMO, dtype=np.int64)
    plan = plan_epochs(lengths, SEED, EPOCHS, 0, BATCH, "carry")
    assert plan.total_steps == (3 * LIMO) // BATCH == 38 and plan.rows_trained == 38 * 64 == 2432
    assert plan.dropped_per_epoch() == [0, 0, 19] and plan.rows_trained + 19 == 3 * LIMO
    steps = _trained(plan, lengths, 0)
    seen = Counter(pair for step in steps for pair in step)
    assert max(seen.values()) == 1 and len(seen) == 2432
    last_order = [row[0] for row in epoch_rows(lengths, SEED, 2, 0)]
    untrained = {(e, i) for e in range(EPOCHS) for i in range(LIMO)} - set(seen)
    assert untrained == {(2, i) for i in last_order[-19:]}  # only the final leftover, the last epoch's last rows
    # Step 12 is epoch 0's tail of 49 rows, then epoch 1's first 15, in their seeded orders.
    first_order = [row[0] for row in epoch_rows(lengths, SEED, 0, 0)]
    second_order = [row[0] for row in epoch_rows(lengths, SEED, 1, 0)]
    assert plan.spans(12) == [(0, 768, 817), (1, 0, 15)] and plan.epoch_of(12) == 1
    assert steps[12] == [(0, i) for i in first_order[768:]] + [(1, i) for i in second_order[:15]]
    # The loss is still normalised over the global batch: a mixed step holds 64 examples like any other.
    store = ExampleStore(np.zeros(LIMO, dtype=np.int32), np.arange(LIMO + 1), np.zeros(LIMO, dtype=np.int64))
    assert global_normaliser(StepRows(plan, lengths, SEED, 0)(12), store, "example") == 64.0


@pytest.mark.parametrize("tail", ["drop", "carry"])
def test_packed_epochs_cover_every_example_once_per_epoch_as_trained_or_dropped(tail):
    lengths = np.random.default_rng(0).integers(4, 40, size=500)
    plan = plan_epochs(lengths, SEED, EPOCHS, 64, 16, tail)
    assert plan.epoch_rows == tuple(len(epoch_rows(lengths, SEED, e, 64)) for e in range(EPOCHS))
    steps = _trained(plan, lengths, 64)
    seen = Counter(pair for step in steps for pair in step)
    assert max(seen.values()) == 1
    dropped = plan.dropped_per_epoch()
    assert plan.rows_trained + sum(dropped) == sum(plan.epoch_rows)
    for e in range(EPOCHS):
        rows = epoch_rows(lengths, SEED, e, 64)
        dropped_examples = {i for row in rows[len(rows) - dropped[e]:] for i in row}
        assert {i for (ep, i) in seen if ep == e} | dropped_examples == set(range(500))
    if tail == "carry":
        assert dropped[:-1] == [0] * (EPOCHS - 1) and dropped[-1] < plan.rows_per_step


@pytest.mark.parametrize("tail", ["drop", "carry"])
def test_the_rows_of_a_step_are_a_pure_function_of_the_step(tail):
    """A run resumed at step s builds a fresh StepRows there: it must see what the uninterrupted run saw."""
    lengths = np.random.default_rng(1).integers(4, 40, size=300)
    plan = plan_epochs(lengths, SEED, EPOCHS, 64, 16, tail)
    uninterrupted = StepRows(plan, lengths, SEED, 64)
    expected = [uninterrupted(k) for k in range(plan.total_steps)]
    for resume_at in (1, plan.total_steps // 3, plan.total_steps // 2, plan.total_steps - 1):
        resumed = StepRows(plan, lengths, SEED, 64)
        assert [resumed(k) for k in range(resume_at, plan.total_steps)] == expected[resume_at:]


def test_carry_trains_a_step_even_where_one_epoch_is_smaller_than_it():
    lengths = np.ones(40, dtype=np.int64)
    assert plan_epochs(lengths, SEED, 3, 0, 64).total_steps == 0  # the stage refuses this (no step)
    plan = plan_epochs(lengths, SEED, 3, 0, 64, "carry")
    assert plan.total_steps == 1 and plan.spans(0) == [(0, 0, 40), (1, 0, 24)]
    assert plan.dropped_per_epoch() == [0, 16, 40]


def test_the_default_plan_is_the_one_before_epoch_tail_existed():
    assert TrainConfig().epoch_tail == "drop"
    lengths = np.random.default_rng(2).integers(4, 40, size=333)
    for pack_length in (0, 64):
        plan = plan_epochs(lengths, SEED, 2, pack_length, 8)
        rows_of = StepRows(plan, lengths, SEED, pack_length)
        legacy = [step_rows(epoch_rows(lengths, SEED, e, pack_length), k, 8) for e in range(2)
                  for k in range(len(epoch_rows(lengths, SEED, e, pack_length)) // 8)]
        assert [rows_of(k) for k in range(plan.total_steps)] == legacy


def test_epoch_tail_is_hashed_only_when_set():
    default = load_config(None, ["run_dir=runs/x"])
    drop, carry = (load_config(None, ["run_dir=runs/x", f"train.epoch_tail={t}"]) for t in ("drop", "carry"))
    assert train_config_hash(drop, "s") == train_config_hash(default, "s") != train_config_hash(carry, "s")


@pytest.mark.parametrize("tail, steps, dropped", [("drop", 36, [49, 49, 49]), ("carry", 38, [0, 0, 19])])
def test_the_train_manifest_counts_every_row_of_every_epoch(monkeypatch, tail, steps, dropped):
    monkeypatch.setattr(stage, "example_lengths", lambda _: np.full(LIMO, 10))
    cfg = load_config(None, ["run_dir=runs/x", "train.num_workers=8", "train.micro_batch_size=1", "train.packing=false",
                             "train.gradient_accumulation_steps=8", "train.epochs=3", f"train.epoch_tail={tail}"])
    counts = stage.plan_steps(cfg, None, {"examples": LIMO})
    assert counts["steps"] == steps and counts["rows_per_step"] == 64 and counts["epoch_tail"] == tail
    assert counts["rows_all_epochs"] == 3 * LIMO == counts["rows_trained"] + counts["rows_dropped"]
    assert counts["rows_trained"] == steps * 64 and counts["rows_dropped_per_epoch"] == dropped
    assert counts["rows_dropped_last_step_first_epoch"] == dropped[0]


def test_too_few_rows_for_one_step_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(stage, "example_lengths", lambda _: np.full(40, 10))
    cfg = load_config(None, ["run_dir=runs/x", "train.num_workers=8", "train.micro_batch_size=16", "train.epochs=2",
                             "train.epoch_tail=carry", "train.packing=false"])
    with pytest.raises(ValueError, match=r"40 training examples make 40 rows per epoch \(80 over the 2 epochs"):
        stage.plan_steps(cfg, None, {"examples": 40})


def _run_log(cfg) -> list[dict]:
    return [json.loads(line) for line in Path(cfg.metrics_path).read_text().splitlines()]


@pytest.mark.slow  # three torchrun launches: ~2 min on 2 CPUs
def test_a_carry_run_killed_before_its_mixed_step_resumes_to_the_same_weights(synthetic, tmp_path):
    """2 ranks, 120 examples x 2 epochs, 14 rows a step: step 9 is epoch 0's last 8 rows and epoch 1's first 6.
    Every rank is SIGKILLed after the step-6 checkpoint; the rerun must train that mixed step as the
    uninterrupted run did."""
    from safetensors.torch import load_file

    settings = dict(packing=False, micro_batch_size=7, epochs=2, epoch_tail="carry", checkpoint_every_steps=2)
    plain, cut = (make_loop_config(tmp_path, *synthetic, name, **settings) for name in ("plain", "cut"))
    plan = plan_epochs(np.ones(120), 0, 2, 0, 14, "carry")
    assert plan.total_steps == 17 and plan.spans(8) == [(0, 112, 120), (1, 0, 6)]
    done = torchrun(tmp_path / "plain" / "loop.json", tmp_path / "plain-ckpt", tmp_path / "plain-export")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    crashed = torchrun(tmp_path / "cut" / "loop.json", tmp_path / "cut-ckpt", None, kill_at=6)
    assert crashed.returncode != 0 and (tmp_path / "cut-ckpt" / "step_00000006").is_dir()
    done = torchrun(tmp_path / "cut" / "loop.json", tmp_path / "cut-ckpt", tmp_path / "cut-export")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in Path(cut.events_path).read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "resumed"] == [6]
    resumed, uninterrupted = _run_log(cut), _run_log(plain)
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == list(range(1, 18))
    assert [r["epoch"] for r in resumed][7:10] == [0, 1, 1]  # step 9 (index 8) ends in epoch 1
    assert resumed[-1]["consumed_examples"] == uninterrupted[-1]["consumed_examples"] == 17 * 14
    assert all(abs(a["loss"] - b["loss"]) <= 1e-6 for a, b in zip(resumed, uninterrupted))
    a, b = ({k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
            for d in (tmp_path / "cut-export", tmp_path / "plain-export"))
    assert a and set(a) == set(b)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
