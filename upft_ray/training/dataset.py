"""The training set on disk: sample shards tokenised by Ray Data tasks into ``RUN/train/examples/``.

One part per sample shard (``examples.tokenize_shard``); ``_done.json`` marks a finished set and the
key it was built for (model, max length, shards, prefix EOS), so a rerun after a crash reuses it. Rows
whose example could not be built are merged into ``RUN/train/rejected.parquet`` with their reasons.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from upft_ray.config import PipelineConfig
from upft_ray.config.types import MODEL_CHAT_TEMPLATE
from upft_ray.io.chunk_store import merge_parts
from upft_ray.io.durable import make_dirs, remove_path
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.io.schema import REJECTED_SCHEMA
from upft_ray.training.examples import example_parts, rejected_part, tokenize_shards

log = logging.getLogger("upft.train")


def sampled_prefix_tokens(sample_manifest: dict) -> int:
    """Return the prefix length the sample stage used (``prefix_tokens: auto`` resolved)."""
    return int(sample_manifest.get("prefix_tokens", sample_manifest["config"]["prefix_tokens"]))


def _examples_key(cfg: PipelineConfig, model_path: str, shards: list[Path]) -> dict:
    """Return what the tokenised examples depend on; a different key means they are rebuilt."""
    return {"model_path": model_path, "max_length": cfg.train.max_length,
            "sample_config_hash": read_json(cfg.run_path / "sample" / "manifest.json")["config_hash"],
            "shards": [[s.name, s.stat().st_size] for s in shards], "filter": "correct-v1",
            "prefix_eos": cfg.train.prefix_eos}


def _tokenize(cfg: PipelineConfig, model_path: str, shards: list[Path], out_dir: Path, manifest: dict) -> dict:
    """Tokenise ``shards`` into parts under ``out_dir`` with Ray Data tasks; return the summed counts."""
    import ray.data  # heavy: Ray loads only when a stage runs

    remove_path(out_dir)
    make_dirs(out_dir)
    items = [{"shard": str(s), "out": str(out_dir / f"part-{s.stem}.parquet")} for s in shards]
    log.info("tokenising %d sample shard(s) into %s", len(shards), out_dir)
    method = manifest["config"]["method"]
    per_part = (ray.data.from_items(items)
                .map_batches(tokenize_shards, batch_size=1,
                             fn_kwargs={"model_path": model_path, "max_length": cfg.train.max_length,
                                        "prefix_tokens": sampled_prefix_tokens(manifest),
                                        "correct_only": method in ("rft", "label_filter"),
                                        "prefix_eos": cfg.train.prefix_eos,
                                        # the template the samples were prompted with, as the manifest records it
                                        "chat_template": manifest["config"].get("engine", {}).get(
                                            "chat_template", MODEL_CHAT_TEMPLATE)})
                .take_all())
    return {k: sum(p[k] for p in per_part) for k in ("rows_in", "incorrect", "failed")}


def prepare_examples(cfg: PipelineConfig, model_path: str) -> tuple[Path, dict]:
    """Tokenise the sample shards into ``RUN/train/examples/part-*.parquet`` (or reuse a finished set); return
    (dir, counts). Raises ValueError when no sampled row or no example is left, naming why."""
    shards_dir = cfg.run_path / "sample" / "shards"
    manifest = read_json(cfg.run_path / "sample" / "manifest.json")  # the sample stage must have finished
    shards = sorted(shards_dir.glob("*.parquet"))
    if not shards:
        raise ValueError(f"no sampled rows in {shards_dir}: every question was rejected (see "
                         f"{cfg.run_path / 'sample' / 'rejected.parquet'})")
    out_dir = cfg.run_path / "train" / "examples"
    done, key = out_dir / "_done.json", _examples_key(cfg, model_path, shards)
    if not (done.is_file() and read_json(done)["key"] == key):
        write_json_atomic(done, {"key": key, **_tokenize(cfg, model_path, shards, out_dir, manifest)})
    built = read_json(done)
    parts = [rejected_part(p) for p in example_parts(out_dir) if rejected_part(p).is_file()]
    merge_parts(parts, REJECTED_SCHEMA, cfg.run_path / "train" / "rejected.parquet")
    return out_dir, example_counts(out_dir, manifest["config"]["method"], built)


def example_counts(out_dir: Path, method: str, built: dict) -> dict:
    """Return the training set's counts (rows in = examples + incorrect + no response token + failed to build).

    Raises ValueError when no example is left, saying where the rows went."""
    rows_in, incorrect, failed = built["rows_in"], built.get("incorrect", 0), built.get("failed", 0)
    table = pq.read_table(example_parts(out_dir), columns=["kind", "num_prompt_tokens", "num_response_tokens",
                                                           "num_masked_tail", "truncated"])
    if table.num_rows == 0:
        raise ValueError(f"no training example left in {out_dir}: of {rows_in} sampled rows, {incorrect} were graded "
                         f"incorrect (method {method}), {failed} could not be built and the rest had no response "
                         "token within train.max_length")

    def total(values) -> int:
        return int(pc.sum(values).as_py() or 0)

    return {
        "method": method, "rows_in": rows_in, "examples": table.num_rows,
        "rows_dropped_incorrect": incorrect, "rows_failed_to_build": failed,
        "rows_dropped_no_response_token": rows_in - incorrect - failed - table.num_rows,
        "examples_truncated": total(table["truncated"]),
        "prefix_examples": total(pc.equal(table["kind"], "prefix")),
        "full_examples": total(pc.equal(table["kind"], "full")),
        "tokens_tuned": total(pc.subtract(table["num_response_tokens"], table["num_masked_tail"])),
        "tokens_total": total(pc.add(table["num_prompt_tokens"], table["num_response_tokens"])),
    }


def example_lengths(examples_dir: Path):
    """Return every example's token count (prompt + response), in the order the workers index them."""
    table = pq.read_table(example_parts(examples_dir), columns=["num_prompt_tokens", "num_response_tokens"])
    return pc.add(table["num_prompt_tokens"], table["num_response_tokens"]).to_numpy()
