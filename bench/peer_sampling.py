"""Peer benchmark: the same sampling requests through four engines, in one run, on one machine.

The requests are the sampler's own (``build_requests``: the UPFT mix of prefix rows cut at t tokens
and a seeded share of full rows, each with its per-request seed) for the first N questions of
bundled:arith-train, rendered with the bundled SmolLM2-135M-Instruct's chat template, decoded with the
same engine options (configs/quickstart.yaml):

  raw          one ``LLM.generate`` call in this process (bench/sampler_throughput.py's ``raw_vllm``)
  raw_in_task  the same call inside a Ray task holding the CPUs an engine actor holds
  ray_data_llm ``ray.data.llm.build_processor`` with a ``vLLMEngineProcessorConfig`` placed on CPUs
               (placement_group_config bundles of CPU only, the single-process "uni" executor), fed the
               same token ids (its chat-template and tokenize stages off: its best case)
  upft_sample  the sampling stage the CLI runs (``upft_ray.orchestration.stages.sample``: Parquet shards, manifest)

Each arm reports generated tokens, the seconds it generated for (engine start-up excluded: the call
for raw; first chunk start to last chunk commit for upft sample; first request start to last row out
for ray.data.llm) and its wall time with start-up. An arm that cannot run records its exact error.
Results, machine and date go to bench/results/peer_sampling.json and the "peer-sampling" block of
bench/RESULTS.md (``--quick``: a few prompts, to bench/results/peer_sampling_quick.json only, a smoke
check); the Markdown table is printed last.

    .venv/bin/python bench/peer_sampling.py [--questions 128] [--max-new-tokens 128] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from doc_blocks import markers, replace_block  # noqa: E402
from sampler_throughput import bench_config, raw_vllm, raw_vllm_in_ray_task, ray_sampler  # noqa: E402

from upft_ray.runtime.hardware import machine_facts  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "peer_sampling.json"
BEGIN, END = markers("peer-sampling", "bench/peer_sampling.py")


def sampler_requests(cfg) -> tuple[list[dict], list[list[int]]]:
    """Return the sampler's requests for ``cfg`` and their prompt token ids (the model's chat template)."""
    from transformers import AutoTokenizer

    from upft_ray.engine.models import resolve_model
    from upft_ray.engine.prompts import render_prompt
    from upft_ray.io.questions import load_questions
    from upft_ray.sampling.requests import build_requests, resolve_sampling

    model_path = resolve_model(cfg.model)
    s, _ = resolve_sampling(cfg.sample, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    requests = build_requests(load_questions(s.questions, s.columns_spec(), s.max_questions).rows, s, cfg.seed)
    return requests, [render_prompt(tokenizer, json.loads(r["messages"]))[1] for r in requests]


def ray_data_llm(cfg) -> dict:
    """Decode the sampler's requests with ray.data.llm's vLLM processor on CPUs; return tokens and seconds."""
    import ray.data
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from upft_ray.engine.models import resolve_model
    from upft_ray.engine.settings import engine_kwargs, vllm_top_k
    from upft_ray.runtime.ray_session import ray_session

    e = cfg.sample.engine
    requests, prompts = sampler_requests(cfg)
    rows = [{"tokenized_prompt": ids, "sampling_params": {
        "max_tokens": r["max_tokens"], "temperature": r["temperature"], "top_p": r["top_p"],
        "top_k": vllm_top_k(r["top_k"]), "seed": r["request_seed"]}} for r, ids in zip(requests, prompts)]
    started = time.time()
    with ray_session(cfg.ray):  # first: building the processor would start a default Ray (all CPUs)
        config = vLLMEngineProcessorConfig(
            model_source=resolve_model(cfg.model),
            engine_kwargs={**engine_kwargs(e, cfg.seed), "distributed_executor_backend": "uni"},
            runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(e.cpu_kv_cache_gib),
                                      "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}},
            placement_group_config={"bundles": [{"CPU": e.cpus_per_replica}]},
            batch_size=cfg.sample.rows_per_shard, concurrency=e.num_replicas,
            chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
            # Its default exports engine metrics through vLLM's Ray Prometheus logger, which imports ray.serve
            # (not installed here: "RayPrometheusMetric requires Ray to be installed"); upft logs no stats either.
            log_engine_metrics=False)
        processor = build_processor(config, postprocess=lambda row: {
            "tokens": len(row["generated_tokens"]), "done": time.time(), "llm_s": row["time_taken_llm"]})
        out = processor(ray.data.from_items(rows)).to_pandas()
    wall = time.time() - started
    first_start = float((out["done"] - out["llm_s"]).min())
    return {"tokens": int(out["tokens"].sum()), "seconds": float(out["done"].max()) - first_start,
            "wall_s": wall, "rows": len(out)}


def run_arm(name: str, fn, cfg) -> dict:
    """Run one arm; return its figures, or its exact error if it cannot run."""
    started = time.time()
    try:
        result = fn(cfg)
    except Exception as err:  # noqa: BLE001 -- a peer that cannot run is a result, recorded as such
        print(f"[peer] {name}: cannot run: {type(err).__name__}: {err}", flush=True)
        return {"error": f"{type(err).__name__}: {err}".strip(), "traceback": traceback.format_exc()[-4000:],
                "wall_s": round(time.time() - started, 2)}
    result.setdefault("wall_s", time.time() - started)
    result["tokens_per_s"] = result["tokens"] / result["seconds"] if result["seconds"] > 0 else 0.0
    print(f"[peer] {name}: {result['tokens']} tokens in {result['seconds']:.1f}s = {result['tokens_per_s']:.1f} "
          f"gen tok/s (wall {result['wall_s']:.1f}s)", flush=True)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def markdown_table(report: dict) -> str:
    """Return the arms of ``report`` as a Markdown table (for bench/RESULTS.md, beside the command)."""
    m = report["machine"]
    vllm = m["versions"].get("vllm-cpu", m["versions"].get("vllm", "?"))
    lines = [f"{report['questions']} questions, max_new_tokens {report['max_new_tokens']}, "
             f"{m['cpu']} x{m['cpu_count']}, {m['date_utc']} UTC, vLLM {vllm}", "",
             "| arm | generated tokens | generating (s) | gen tok/s | wall with start-up (s) |", "|---|---|---|---|---|"]
    for name, r in report["arms"].items():
        if "error" in r:
            lines.append(f"| {name} | cannot run: `{r['error'][:200]}` | | | {r['wall_s']:.1f} |")
        else:
            lines.append(f"| {name} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} "
                         f"| {r['wall_s']:.1f} |")
    goals = report.get("goals", {})

    def verdict(key: str, ratio: float) -> str:
        goal = goals.get(key)
        return f" (goal {goal}: {'met' if ratio >= float(goal.split()[-1]) else 'NOT met'})" if goal else ""
    lines += [""] + [f"- **{k} = {v:.3f}**{verdict(k, v)}" for k, v in report["ratios"].items()]
    return "\n".join(lines)


def results_block(report: dict) -> str:
    """Return RESULTS.md's peer-sampling block (markers included)."""
    return f"{BEGIN}\n\n{markdown_table(report)}\n\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--rows-per-shard", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="8 questions, 16 new tokens: a smoke check")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--arms", default="raw,raw_in_task,ray_data_llm,upft_sample",
                        help="comma-separated subset of the arms to run (all by default)")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.rows_per_shard, args.max_new_tokens = 8, 4, 16
    out = args.out or (RESULTS.with_name("peer_sampling_quick.json") if args.quick else RESULTS)
    every_arm = {"raw": raw_vllm, "raw_in_task": raw_vllm_in_ray_task, "ray_data_llm": ray_data_llm,
                 "upft_sample": ray_sampler}
    arms = {name: every_arm[name] for name in args.arms.split(",")}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in arms.items():
            results[name] = run_arm(name, fn, bench_config(Path(tmp) / name, args))
    rates = {k: results.get(k, {}).get("tokens_per_s") for k in every_arm}
    ratios = {f"upft_sample/{k}": rates["upft_sample"] / rates[k]
              for k in ("raw", "raw_in_task", "ray_data_llm") if rates.get("upft_sample") and rates.get(k)}
    report = {"command": "bench/peer_sampling.py" + (" --quick" if args.quick else ""),
              "questions": args.questions, "rows_per_shard": args.rows_per_shard,
              "max_new_tokens": args.max_new_tokens, "config": "configs/quickstart.yaml", "machine": machine_facts(),
              "arms": results, "ratios": {k: round(v, 3) for k, v in ratios.items()},
              "goals": {"upft_sample/ray_data_llm": ">= 1.0", "upft_sample/raw_in_task": ">= 0.9"}}
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.quick and args.out is None:
        replace_block(REPO_ROOT / "bench" / "RESULTS.md", BEGIN, END, results_block(report))
    print(markdown_table(report))
    print(f"[peer] wrote {out}")


if __name__ == "__main__":
    main()
