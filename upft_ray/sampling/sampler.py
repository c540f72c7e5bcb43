"""Prefix sampling: question chunks -> Ray Data -> vLLM actors -> one Parquet shard per chunk.

The run is a plan (``plan.json``: the source cut into chunks) and one shard per chunk. Ray Data
streams the pending chunks: a CPU task reads and validates each chunk's records and builds the
requests; an actor pool of engines (``ChunkSampler``) generates them and writes the chunk's shard.
Nothing holds the whole question set: the driver keeps only the plan and one summary per chunk.
A killed run, rerun with the same command, skips the chunks whose shard exists and does the rest,
so every question ends up in exactly one shard (once per sample index).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from upft_ray.config import PipelineConfig, config_to_dict, sample_config_hash
from upft_ray.durable import commit_file, remove_orphan_temps
from upft_ray.inference import VLLMGenerator, engine_actor_options
from upft_ray.models import resolve_model
from upft_ray.sampling.plan import Plan, plan_for_run
from upft_ray.sampling.requests import chunk_requests, resolve_sampling
from upft_ray.sampling.chunk_sampler import ChunkSampler, read_summary, rejected_part_path, summary_path
from upft_ray.schema import REJECTED_SCHEMA, package_versions, write_json_atomic

CHUNK_DIRS = ("shards", "rejected", "chunks")  # where the chunk writers put their files


def pending_chunks(plan: Plan, out_dir: Path) -> list:
    """Return the chunks of ``plan`` not finished yet (no summary); remove temp files a kill left."""
    remove_orphan_temps(out_dir / sub for sub in CHUNK_DIRS)
    return [c for c in plan.chunks if not summary_path(out_dir, c.index).is_file()]


class Progress:
    """Prints a line per finished shard (at most every ``every_s`` seconds): questions/s, tokens/s, ETA.

    Rates are measured from the first finished shard, so engine start-up does not distort them; until
    a second shard finishes they are measured from the start (start-up included) rather than shown as 0."""

    def __init__(self, total_chunks: int, total_records: int, done_chunks: int, done_records: int,
                 every_s: float = 5.0):
        self.total_chunks, self.total_records = total_chunks, total_records
        self.chunks, self.records, self.tokens = done_chunks, done_records, 0
        self.every_s, self.last, self.first = every_s, 0.0, None
        self.start = (time.time(), done_records, 0)

    def update(self, summary: dict) -> None:
        """Count one finished chunk and print a progress line if it is time."""
        now = time.time()
        self.chunks += 1
        self.records += summary["records"]
        if self.first is None:
            self.first = (now, self.records, summary["generated_tokens"])
        self.tokens += summary["generated_tokens"]
        if now - self.last < self.every_s and self.chunks < self.total_chunks:
            return
        self.last = now
        t0, r0, k0 = self.first if self.records > self.first[1] else self.start
        elapsed = now - t0
        rate = (self.records - r0) / elapsed if elapsed > 0 else 0.0
        tok_rate = (self.tokens - k0) / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total_records - self.records) / rate:,.0f}s" if rate > 0 else "-"
        print(f"[sample] shards {self.chunks}/{self.total_chunks} | questions {self.records:,}/{self.total_records:,} "
              f"| {rate:,.1f} q/s | {tok_rate:,.0f} gen tok/s | ETA {eta}", flush=True)


def run_sample(cfg: PipelineConfig, engine_cls: type = VLLMGenerator, prefix_choice: dict | None = None) -> dict:
    """Run (or finish) the sampling stage into ``RUN/sample/``; return the manifest it wrote.

    Writes ``plan.json``, ``shards/shard-*.parquet`` (SAMPLE_SCHEMA), ``rejected/`` parts merged into
    ``rejected.parquet`` and, last, ``manifest.json``. ``engine_cls`` is VLLMGenerator except in the
    scale benchmark. Raises ValueError for a run directory that holds another config's samples and
    RuntimeError if counts do not balance (records in != questions written + records rejected).
    ``sample.prefix_tokens: auto`` is decided above this stage (``analysis.runner.sample_stage``):
    ``prefix_choice`` is that decision, recorded in the manifest; the run hash keeps "auto" as written."""
    import ray.data

    if cfg.sample.prefix_tokens == "auto":
        raise ValueError("sample.prefix_tokens: 'auto' must be resolved before the sampling stage "
                         "(upft_ray.analysis.runner.sample_stage does it)")

    started = time.time()
    out_dir = cfg.run_path / "sample"
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model(cfg.model)
    # Sampling fields saying "model" take the generation_config's values; the hash sees those values,
    # so a run resumed after the model's generation_config changed is refused, not mixed.
    sample_cfg, sampling = resolve_sampling(cfg.sample, model_path)
    cfg = cfg.model_copy(update={"sample": sample_cfg})
    # prefix_tokens as written: "auto" stays "auto" in the hash, so a rerun resumes whatever t it chose
    written = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"prefix_tokens": "auto"})}) \
        if prefix_choice else cfg
    run_hash = sample_config_hash(written)
    s = cfg.sample
    plan, resumed = plan_for_run(out_dir, s.questions, s.columns_spec(), s.rows_per_shard, s.max_questions, run_hash)
    todo = pending_chunks(plan, out_dir)
    reused = len(plan.chunks) - len(todo)
    print(f"[sample] {plan.records:,} records from {plan.source} in {len(plan.chunks)} chunks; "
          f"{'resuming: ' if resumed else ''}{reused} shards done, {len(todo)} to write; model {cfg.model}")
    if todo:
        progress = Progress(len(plan.chunks), plan.records, reused, plan.records - sum(c.records for c in todo))
        ds = ray.data.from_items([{"chunk": c.to_json()} for c in todo], override_num_blocks=len(todo))
        # Reading a chunk takes milliseconds next to generating it: two readers per engine keep
        # the engines fed without a crowd of idle worker processes.
        ds = ds.map_batches(chunk_requests, batch_size=1, batch_format="pandas", num_cpus=0.25,
                            compute=ray.data.TaskPoolStrategy(size=2 * s.engine.num_replicas),
                            fn_kwargs={"sample": s, "seed": cfg.seed})
        ds = ds.map_batches(
            ChunkSampler, batch_size=None, batch_format="pandas",
            fn_constructor_kwargs={"out_dir": str(out_dir), "model_path": model_path, "engine": config_to_dict(s.engine),
                                   "seed": cfg.seed, "model_name": cfg.model, "engine_cls": engine_cls},
            **engine_actor_options(s.engine))
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for summary in batch.to_dict("records"):
                progress.update(summary)
    # Every writer has finished; a writer on a lost node may have left its half-written file behind.
    orphans = remove_orphan_temps(out_dir / sub for sub in CHUNK_DIRS)
    if orphans:
        print(f"[sample] removed {orphans} temporary file(s) left by writers that were lost mid-chunk")
    manifest = sample_manifest(cfg, model_path, plan, out_dir, run_hash, reused, time.time() - started)
    manifest["prefix_tokens"] = s.prefix_tokens
    manifest["sampling_params"] = sampling
    if prefix_choice:
        manifest["prefix_tokens_choice"] = prefix_choice
    write_json_atomic(out_dir / "manifest.json", manifest)
    c, t = manifest["counts"], manifest["tokens"]
    print(f"[sample] wrote {c['rows_written']:,} rows ({c['prefix_rows']:,} prefix, {c['full_rows']:,} full) for "
          f"{c['questions_written']:,} questions, {c['rows_rejected']:,} rejected; {t['generated']:,} tokens "
          f"generated in {manifest['wall_time_s']:.1f}s -> {out_dir}")
    return manifest


def merge_rejected(out_dir: Path, chunks: list[int]) -> pd.Series:
    """Merge the rejected parts of ``chunks`` into ``rejected.parquet``; return the count per reason kind."""
    import pyarrow.parquet as pq

    reasons: dict[str, int] = {}
    tmp = out_dir / ".rejected.parquet.tmp"
    with pq.ParquetWriter(tmp, REJECTED_SCHEMA) as writer:
        for index in chunks:
            part = pq.read_table(rejected_part_path(out_dir, index), schema=REJECTED_SCHEMA)
            writer.write_table(part)
            for reason in part.column("reason").to_pylist():
                key = reason.split(":", 1)[0]  # "kind: detail" -> kind
                reasons[key] = reasons.get(key, 0) + 1
    commit_file(tmp, out_dir / "rejected.parquet")
    return pd.Series(reasons, dtype="int64")


def sample_manifest(cfg: PipelineConfig, model_path: str, plan: Plan, out_dir: Path, run_hash: str,
                    reused: int, wall_time_s: float) -> dict:
    """Return the sample manifest, built from the chunks' summaries: counts that balance, tokens, versions.

    Raises RuntimeError if a chunk is unfinished or the counts do not balance."""
    missing = [c.index for c in plan.chunks if not summary_path(out_dir, c.index).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} chunk(s) unfinished after the run (first: {missing[:5]}); rerun "
                           "the same command to finish them")
    summaries = pd.DataFrame([read_summary(out_dir, c.index) for c in plan.chunks])
    total = summaries.sum(numeric_only=True) if len(summaries) else pd.Series(dtype="int64")
    reasons = merge_rejected(out_dir, [int(i) for i in summaries.loc[summaries["rejected"] > 0, "chunk"]]
                             if len(summaries) else [])
    counts = {
        "rows_in": plan.records,
        "questions_written": int(total.get("questions", 0)),
        "rows_written": int(total.get("rows", 0)),
        "rows_rejected": int(total.get("rejected", 0)),
        "samples_per_question": cfg.sample.num_samples,
        "prefix_rows": int(total.get("prefix_rows", 0)),
        "full_rows": int(total.get("full_rows", 0)),
        "rejected_by_reason": {k: int(v) for k, v in reasons.items()},
    }
    if counts["questions_written"] + counts["rows_rejected"] != plan.records or \
            int(reasons.sum()) != counts["rows_rejected"]:
        raise RuntimeError(f"sample counts do not balance: {counts}")
    sample_cfg = config_to_dict(cfg.sample)
    gen_window = (summaries["finished"].max() - summaries["started"].min()) if len(summaries) else 0.0
    return {
        "stage": "sample",
        "model": cfg.model,
        "model_path": model_path,
        "seed": cfg.seed,
        "config": sample_cfg,
        "config_hash": run_hash,
        "counts": counts,
        "tokens": {
            "prompt": int(total.get("prompt_tokens", 0)),
            "generated": int(total.get("generated_tokens", 0)),
            "generated_prefix": int(total.get("generated_prefix", 0)),
            "generated_full": int(total.get("generated_full", 0)),
        },
        "shards": {"total": len(plan.chunks), "reused": reused, "written": len(plan.chunks) - reused,
                   "rows_per_shard": cfg.sample.rows_per_shard},
        "versions": package_versions(),
        "generation_window_s": round(float(gen_window), 2),
        "wall_time_s": round(wall_time_s, 2),
    }
