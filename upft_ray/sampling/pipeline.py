"""Prefix sampling: question chunks -> Ray Data -> engine actors -> one Parquet shard per chunk.

The run is a plan (``plan.json``: the source cut into chunks) and one shard per chunk, run by the
chunked executor (``upft_ray.execution``): a CPU task reads and validates each chunk's records and
builds the requests (``requests.read_chunk``); the engine actors generate them and commit the chunk's
shard (``finish.finish_unit``), exactly once. Nothing holds the whole question set: the driver keeps
only the plan and one summary per chunk. A killed run, rerun with the same command, skips the chunks
that are committed and does the rest, so every question ends up in exactly one shard (once per
sample index).
"""

from __future__ import annotations

import logging
import time

from upft_ray.config import PipelineConfig
from upft_ray.config.hashing import sample_config_hash
from upft_ray.engine.models import resolve_model
from upft_ray.execution.driver import Progress, run_chunks
from upft_ray.execution.job import ChunkJob
from upft_ray.io.chunk_store import ChunkStore
from upft_ray.io.manifests import write_json_atomic
from upft_ray.sampling.finish import finish_unit
from upft_ray.sampling.manifest import sample_manifest
from upft_ray.sampling.plan import plan_for_run
from upft_ray.sampling.requests import SampleContext, read_chunk, resolve_sampling

log = logging.getLogger("upft.sample")


def run_sample(cfg: PipelineConfig, prefix_choice: dict | None = None) -> dict:
    """Run (or finish) the sampling stage into ``RUN/sample/`` (Ray must be up); return the manifest it wrote.

    Writes ``plan.json``, ``shards/shard-*.parquet`` (SAMPLE_SCHEMA), ``rejected/`` parts merged into
    ``rejected.parquet`` and, last, ``manifest.json``. Raises ValueError for a run directory that holds
    another config's samples and RuntimeError if counts do not balance (records in != questions written
    + records rejected). ``sample.prefix_tokens: auto`` is decided before (``sampling.stage``):
    ``prefix_choice`` is that decision, recorded in the manifest; the run hash keeps "auto" as written."""
    if cfg.sample.prefix_tokens == "auto":
        raise ValueError("sample.prefix_tokens: 'auto' must be resolved before the sampling run "
                         "(upft_ray.sampling.stage.sample_stage does it)")
    started = time.time()
    out_dir = cfg.run_path / "sample"
    store = ChunkStore(out_dir)
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
    store.prepare()
    plan, resumed = plan_for_run(out_dir, s.questions, s.columns_spec(), s.rows_per_shard, s.max_questions, run_hash)
    store.mark_interrupted()
    todo = [c for c in plan.chunks if store.chunk_units(c.index, c.records) is None]
    reused = len(plan.chunks) - len(todo)
    log.info("%s records from %s in %d chunks; %s%d shards done, %d to write; model %s", f"{plan.records:,}",
             plan.source, len(plan.chunks), "resuming: " if resumed else "", reused, len(todo), cfg.model)
    if todo:
        job = ChunkJob(str(out_dir), {c.index: (c, c.records) for c in todo}, read_chunk, finish_unit,
                       SampleContext(s, cfg.seed, cfg.model), "sample")
        progress = Progress(log, len(plan.chunks), plan.records, reused, plan.records - sum(c.records for c in todo))
        run_chunks(job, [c.index for c in todo], model_path, s.engine, cfg.seed, progress)
    manifest = sample_manifest(cfg, model_path, plan, store, run_hash, reused, time.time() - started)
    manifest.update(prefix_tokens=s.prefix_tokens, sampling_params=sampling)
    if prefix_choice:
        manifest["prefix_tokens_choice"] = prefix_choice
    write_json_atomic(out_dir / "manifest.json", manifest)
    c, t = manifest["counts"], manifest["tokens"]
    # a resumed run's tokens include its reused shards', generated before this run's time started
    earlier = f" ({reused} of {len(plan.chunks)} shards from an earlier run)" if reused else ""
    log.info("wrote %s rows (%s prefix, %s full) for %s questions, %s rejected; %s tokens generated%s; %.1fs -> %s",
             f"{c['rows_written']:,}", f"{c['prefix_rows']:,}", f"{c['full_rows']:,}", f"{c['questions_written']:,}",
             f"{c['rows_rejected']:,}", f"{t['generated']:,}", earlier, manifest["wall_time_s"], out_dir)
    return manifest
