"""``upft train`` against a plain torch loop, and packing efficiency, for ``bench/train_throughput.py`` (its
default mode; see there). Figures go to bench/results/train_throughput.json and the "train-throughput"
block of bench/RESULTS.md."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from doc_blocks import markers, replace_block

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "train_throughput.json"
BEGIN, END = markers("train-throughput", "bench/train_throughput.py")
QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"
# A small random Llama with SmolLM2's tokenizer: a run takes minutes on 2 cores.
BODY = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)
PACK_LENGTHS = (256, 512, 1024, 2048, 4096)
DRAWN_EXAMPLES = 50_000


def make_model(out: Path) -> Path:
    """Save a small random Llama (BODY) with the bundled model's tokenizer; return its directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from upft_ray.engine.models import prepare_bundled_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_bundled_model("smollm2-135m-instruct"))
    config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id, **BODY)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def steady_tokens_per_s(rows: list[dict]) -> float:
    """Return the median tokens/s over the steps after the first two (start-up and first kernel builds)."""
    return statistics.median(r["tokens_per_s"] for r in rows[2:])


def trainer_run(cfg) -> dict:
    """Run ``upft train``'s stage; return its steady tokens/s, step count and example counts."""
    from upft_ray.orchestration import stages as pipeline

    manifest = pipeline.train(cfg)
    rows = [json.loads(line) for line in (cfg.run_path / "train" / "metrics.jsonl").read_text().splitlines()]
    return {"tokens_per_s": steady_tokens_per_s(rows), "steps": len(rows), "counts": manifest["counts"]}


def plain_loop(cfg, model_dir: Path, steps: int) -> dict:
    """Return the steady tokens/s of the trainer's first-epoch global batches run in one process (2 torch
    threads) with the trainer's rows, collate, loss path and padding, and torch AdamW; no Ray, no DeepSpeed."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from upft_ray.training.examples import example_parts
    from upft_ray.training.loop import step_rows
    from upft_ray.training.objective import global_normaliser, micro_batch_loss
    from upft_ray.training.packing import ExampleStore, collate_rows, epoch_rows

    t = cfg.train
    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    store = ExampleStore.from_parts(example_parts(cfg.run_path / "train" / "examples"))
    rows = epoch_rows(store.lengths, cfg.seed, 0, t.max_length if t.packing else 0)
    rows_per_step = t.micro_batch_size * t.num_workers
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    pad_id = model.config.pad_token_id or 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate)
    rates = []
    for k in range(min(steps, len(rows) // rows_per_step)):
        started = time.time()
        rows_of_step = step_rows(rows, k, rows_per_step)
        normaliser = global_normaliser(rows_of_step, store, t.loss_normalization)
        for m in range(t.num_workers):  # the trainer's micro-batches, one after the other
            micro = rows_of_step[m * t.micro_batch_size:(m + 1) * t.micro_batch_size]
            batch = collate_rows(micro, store, pad_id, multiple=t.pad_to_multiple_of)
            loss = micro_batch_loss(model, batch, t.loss_normalization, "cpu", multiple=t.pad_to_multiple_of)
            (loss / normaliser).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = sum(int(store.lengths[np.asarray(r)].sum()) for r in rows_of_step)  # real tokens, no padding
        rates.append({"tokens_per_s": tokens / (time.time() - started)})
    return {"tokens_per_s": steady_tokens_per_s(rates), "steps": len(rates)}


def packing_figures(lengths) -> dict:
    """Return packing efficiency (real tokens / row capacity) of first-fit rows over the seeded order, for these
    examples and for DRAWN_EXAMPLES drawn from their length distribution (few examples fill few rows, so
    the last, half-empty row weighs a lot), by tokens per row; and the examples' length statistics."""
    import numpy as np

    from upft_ray.training.packing import epoch_rows, packing_efficiency

    drawn = np.random.default_rng(0).choice(lengths, size=DRAWN_EXAMPLES)
    return {"lengths": {"mean": float(lengths.mean()), "min": int(lengths.min()), "max": int(lengths.max())},
            "efficiency": {n: packing_efficiency(epoch_rows(lengths, 42, 0, n), lengths, n) for n in PACK_LENGTHS},
            "efficiency_drawn": {n: packing_efficiency(epoch_rows(drawn, 42, 0, n), drawn, n) for n in PACK_LENGTHS}}


def bench_configs(tmp: Path, model_dir: Path, args) -> dict:
    """Return the sample config and the packed and unpacked train configs: the quickstart's settings but fp32,
    the random model and the bench's epochs, row length and micro-batch; the train runs share one sample."""
    from upft_ray.config import load_config

    configs = {"sample": load_config(QUICKSTART, [f"run_dir={tmp / 'sampled'}"])}
    for name, packing in (("packed", True), ("unpacked", False)):
        run = tmp / name
        run.mkdir()
        (run / "sample").symlink_to(tmp / "sampled" / "sample")
        configs[name] = load_config(QUICKSTART, [
            f"run_dir={run}", f"model={model_dir}", "train.precision=fp32", f"train.epochs={args.epochs}",
            f"train.max_length={args.max_length}", f"train.micro_batch_size={args.micro_batch_size}",
            f"train.packing={str(packing).lower()}", "train.gradient_accumulation_steps=1"])
    return configs


def compare_trainer(args) -> None:
    """Measure ``upft train`` packed and unpacked and the plain loop; write RESULTS and the RESULTS.md block."""
    import torch

    from upft_ray.io.manifests import write_json_atomic
    from upft_ray.orchestration import stages as pipeline
    from upft_ray.runtime.hardware import machine_facts
    from upft_ray.training.dataset import example_lengths

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_model(tmp / "model")
        configs = bench_configs(tmp, model_dir, args)
        pipeline.sample(configs["sample"])
        packed = trainer_run(configs["packed"])
        plain = plain_loop(configs["packed"], model_dir, steps=packed["steps"])
        unpacked = trainer_run(configs["unpacked"])
        packing = packing_figures(example_lengths(configs["packed"].run_path / "train" / "examples"))
    t, s = configs["packed"].train, configs["packed"].sample
    report = {"command": f"bench/train_throughput.py --epochs {args.epochs} --max-length {args.max_length} "
                         f"--micro-batch-size {args.micro_batch_size}",
              "machine": machine_facts(), "load_avg_1min": [load_before[0], os.getloadavg()[0]],
              "torch_threads": torch.get_num_threads(), "model_body": BODY,
              "settings": {"prefix_tokens": s.prefix_tokens, "structure_ratio": s.structure_ratio,
                           "num_workers": t.num_workers, "zero_stage": t.zero_stage, "precision": t.precision,
                           "epochs": t.epochs, "max_length": t.max_length, "micro_batch_size": t.micro_batch_size,
                           "loss_normalization": t.loss_normalization, "pad_to_multiple_of": t.pad_to_multiple_of},
              "counts": packed["counts"], "packing": packing,
              "runs": {"trainer_packed": packed, "trainer_unpacked": unpacked, "plain_packed": plain},
              "trainer_over_plain": packed["tokens_per_s"] / plain["tokens_per_s"],
              "packed_over_unpacked": packed["tokens_per_s"] / unpacked["tokens_per_s"]}
    write_json_atomic(RESULTS, report)
    block = results_block(json.loads(RESULTS.read_text()))  # as the test renders it: JSON keys are strings
    replace_block(REPO_ROOT / "bench" / "RESULTS.md", BEGIN, END, block)
    print(block)


def results_block(report: dict) -> str:
    """Return RESULTS.md's train-throughput block (markers included) from the recorded JSON."""
    m, st, c, runs, pk = report["machine"], report["settings"], report["counts"], report["runs"], report["packing"]
    load = report["load_avg_1min"]
    quiet = "quiet" if max(load) < 3 else "NOT quiet: other work shared the CPUs, so tokens/s are noisy"
    body, lengths = report["model_body"], pk["lengths"]

    def row(label: str, run: dict) -> str:
        return f"| {label} | {run['tokens_per_s']:,.0f} | {run['steps']} |"

    def efficiencies(figures: dict) -> str:
        return " / ".join(f"{figures[str(n)]:.3f}" for n in PACK_LENGTHS)

    return "\n".join([
        BEGIN, "", f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']}; 1-minute load "
        f"average {load[0]:.2f} before, {load[1]:.2f} after ({quiet}). Data: the quickstart's sample stage (bundled "
        f"model and questions, t = {st['prefix_tokens']}, p = {st['structure_ratio']}): {c['examples']} examples "
        f"({c['prefix_examples']} prefix, {c['full_examples']} full), {lengths['mean']:.1f} tokens on average "
        f"({lengths['min']}-{lengths['max']}). Model: a random Llama with SmolLM2's tokenizer (hidden "
        f"{body['hidden_size']}, {body['num_hidden_layers']} layers), {st['precision']}; rows of {st['max_length']} "
        f"tokens, {st['micro_batch_size']} per micro-batch and worker, {st['epochs']} epochs, loss per "
        f"{st['loss_normalization']}, widths padded to a multiple of {st['pad_to_multiple_of']}. Tokens/s counts "
        "real tokens (no padding), median over the steps after the first two.", "",
        "| run | real tokens/s | steps |", "|---|---|---|",
        row(f"`upft train`: Ray Train, {st['num_workers']} workers x 1 CPU, DeepSpeed ZeRO-{st['zero_stage']} "
            "(gloo), packed", runs["trainer_packed"]),
        row("`upft train`, same, one example per row (unpacked)", runs["trainer_unpacked"]),
        row("plain torch loop: 1 process x 2 threads, AdamW, the same rows, collate and loss, packed",
            runs["plain_packed"]), "",
        f"**trainer packed / plain loop packed: {report['trainer_over_plain']:.3f}**; trainer packed / unpacked: "
        f"{report['packed_over_unpacked']:.2f}. Packing efficiency (real tokens / row capacity, first-fit over the "
        f"seeded order) at {' / '.join(f'{n:,}' for n in PACK_LENGTHS)} tokens per row: "
        f"{efficiencies(pk['efficiency'])} on these examples, {efficiencies(pk['efficiency_drawn'])} on "
        f"{DRAWN_EXAMPLES:,} drawn from their lengths.",
        "", END])
