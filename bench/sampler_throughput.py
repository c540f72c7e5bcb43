"""Sampler overhead: the same requests through (a) raw vLLM ``LLM.generate`` and (b) ``upft sample``.

Both decode exactly the same requests (the UPFT mix: prefix rows cut at t tokens, a seeded share p
of full rows) with the same engine options on the bundled SmolLM2-135M-Instruct:
(a) one ``LLM.generate`` call in this process, timed around that call only;
(b) the Ray Data sampler (read tasks -> vLLM actor -> Parquet shards), timed over its generation
    window: from the first chunk's start to the last chunk's summary, which includes tokenising,
    Ray Data hand-offs, per-chunk drains and shard writes but not Ray's or the engine's start-up
    (reported separately, with the stage's wall time).
(c) the same single ``LLM.generate`` call as (a), but inside a plain Ray task with the actor's CPUs:
    it separates what running inside a Ray worker costs from what the Ray Data pipeline costs.
Generated tokens / seconds for each, and the ratio b/a (goal >= 0.9), are printed. The runs
alternate (a, b, c, a, b, c, ...) for --repeats rounds so that machine noise hits all of them.

    .venv/bin/python bench/sampler_throughput.py [--questions 400] [--rows-per-shard 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from upft_ray.config import load_config  # noqa: E402


def bench_config(run_dir: Path, args):
    return load_config(REPO_ROOT / "configs" / "quickstart.yaml", [
        f"run_dir={run_dir}", f"sample.max_questions={args.questions}", f"sample.max_new_tokens={args.max_new_tokens}",
        f"sample.rows_per_shard={args.rows_per_shard}",
        "sample.prefix_tokens=8"])  # the setting RESULTS.md's figures were measured with (the quickstart's then)


def raw_vllm(cfg) -> dict:
    """Decode the sampler's requests with one LLM.generate call; return tokens and seconds."""
    from upft_ray.engine.models import resolve_model
    from upft_ray.engine.prompts import render_prompt
    from upft_ray.engine.settings import engine_env, engine_kwargs, vllm_top_k
    from upft_ray.io.questions import load_questions
    from upft_ray.sampling.requests import build_requests, resolve_sampling

    s, _ = resolve_sampling(cfg.sample, resolve_model(cfg.model))
    engine_env(s.engine, in_process_core=True)
    from vllm import LLM, SamplingParams

    started = time.time()
    # The actor's own engine arguments (dtype choice, CPU prefill setting), so both decode alike.
    llm = LLM(model=resolve_model(cfg.model), **engine_kwargs(s.engine, cfg.seed))
    init_s = time.time() - started
    tokenizer = llm.get_tokenizer()
    rows = load_questions(s.questions, s.columns_spec(), s.max_questions).rows
    requests = build_requests(rows, s, cfg.seed)
    prompts = [{"prompt_token_ids": render_prompt(tokenizer, json.loads(r["messages"]))[1]} for r in requests]
    params = [SamplingParams(max_tokens=r["max_tokens"], temperature=r["temperature"], top_p=r["top_p"],
                             top_k=vllm_top_k(r["top_k"]), seed=r["request_seed"])
              for r in requests]
    started = time.time()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.time() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    return {"tokens": tokens, "seconds": seconds, "engine_init_s": init_s}


def ray_sampler(cfg) -> dict:
    """Run the sampling stage on a private local Ray; return tokens and the generation window."""
    from upft_ray.orchestration import stages as pipeline

    started = time.time()
    manifest = pipeline.sample(cfg)
    return {"tokens": manifest["tokens"]["generated"], "seconds": manifest["generation_window_s"],
            "stage_wall_s": manifest["wall_time_s"], "with_ray_start_s": time.time() - started}


def raw_vllm_in_ray_task(cfg) -> dict:
    """Run ``raw_vllm`` inside a Ray task holding the CPUs a sampler actor holds."""
    import ray

    from upft_ray.runtime.ray_session import ray_session

    with ray_session(cfg.ray):
        task = ray.remote(num_cpus=cfg.sample.engine.cpus_per_replica)(raw_vllm)
        return ray.get(task.remote(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--rows-per-shard", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    raw, ray_runs, in_task = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            raw.append(raw_vllm(bench_config(Path(tmp) / f"raw{i}", args)))
            print(f"[bench] raw vLLM   round {i}: {raw[-1]}", flush=True)
            ray_runs.append(ray_sampler(bench_config(Path(tmp) / f"ray{i}", args)))
            print(f"[bench] Ray sampler round {i}: {ray_runs[-1]}", flush=True)
            in_task.append(raw_vllm_in_ray_task(bench_config(Path(tmp) / f"task{i}", args)))
            print(f"[bench] raw vLLM in a Ray task round {i}: {in_task[-1]}", flush=True)
    raw_tps = [r["tokens"] / r["seconds"] for r in raw]
    ray_tps = [r["tokens"] / r["seconds"] for r in ray_runs]
    task_tps = [r["tokens"] / r["seconds"] for r in in_task]
    print(f"\nquestions {args.questions}, rows_per_shard {args.rows_per_shard}, max_new_tokens {args.max_new_tokens}, "
          f"rounds {args.repeats}")
    print(f"raw vLLM LLM.generate : {statistics.median(raw_tps):8.1f} generated tok/s  "
          f"(per round {', '.join(f'{x:.1f}' for x in raw_tps)}; tokens {raw[0]['tokens']})")
    print(f"Ray Data sampler      : {statistics.median(ray_tps):8.1f} generated tok/s  "
          f"(per round {', '.join(f'{x:.1f}' for x in ray_tps)}; tokens {ray_runs[0]['tokens']})")
    print(f"raw vLLM in Ray task  : {statistics.median(task_tps):8.1f} generated tok/s  "
          f"(per round {', '.join(f'{x:.1f}' for x in task_tps)})")
    print(f"ratio sampler / raw   : {statistics.median(ray_tps) / statistics.median(raw_tps):.3f}  (goal >= 0.9)")
    print(f"ratio sampler / raw in a Ray task: {statistics.median(ray_tps) / statistics.median(task_tps):.3f}; "
          f"raw in a Ray task / raw: {statistics.median(task_tps) / statistics.median(raw_tps):.3f}")
    print(f"start-up, not in the rates: engine {statistics.median(r['engine_init_s'] for r in raw):.1f}s (raw); "
          f"sampler stage wall {statistics.median(r['stage_wall_s'] for r in ray_runs):.1f}s, "
          f"with Ray start {statistics.median(r['with_ray_start_s'] for r in ray_runs):.1f}s")


if __name__ == "__main__":
    main()
