"""The evaluation plan: what an evaluation directory evaluates (config, model, benchmark files) and its chunks.

``RUN/eval*/plan.json`` keeps the identity of the evaluation (the eval settings results depend on, the
model's files, the benchmark files) and the size of every chunk. A rerun of the same evaluation reuses
the plan, so its chunks are cut the same way whatever ``engine.batch_size`` says now, and skips the
committed ones; another config, another model (a retrained ``train/final``) or a changed benchmark file
is refused once a chunk is committed (a plan with nothing committed is replaced).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from upft_ray.config import PipelineConfig
from upft_ray.config.hashing import OPERATIONAL, RESOURCE_FIELDS, config_hash, hashed_dict
from upft_ray.evaluation.benchmarks import parse_benchmark_spec
from upft_ray.io.chunk_store import ChunkStore
from upft_ray.io.durable import remove_path
from upft_ray.io.manifests import read_json, write_json_atomic
from upft_ray.io.sources import list_source_files

log = logging.getLogger("upft.eval")


def model_fingerprint(model_path: str) -> dict:
    """Return what identifies the model's weights: each file's name, size and mtime (a re-exported
    checkpoint is another model), or the hub id of a model that is not a local directory."""
    path = Path(model_path)
    if not path.is_dir():
        return {"hub_id": model_path}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {"path": str(path), "files": [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                                         for p in files]}


def eval_identity(cfg: PipelineConfig, model_path: str) -> dict:
    """Return what an evaluation's results depend on: eval settings, system prompt, the seed when decoding
    samples, the model's files and the benchmark files."""
    settings = hashed_dict(cfg.eval)
    settings["engine"] = {k: v for k, v in settings["engine"].items() if k not in RESOURCE_FIELDS}
    for key in (*OPERATIONAL["eval"], "judge"):  # the answers do not depend on the judge (it has its own plan)
        settings.pop(key, None)
    files = [[f.uri, f.size, f.mtime] for spec in cfg.eval.benchmarks
             for f in list_source_files(parse_benchmark_spec(spec)[2])]
    identity = {"eval": settings, "system_prompt": cfg.sample.system_prompt, "model": model_fingerprint(model_path),
                "benchmark_files": files}
    if cfg.eval.decoding == "sample":
        identity["seed"] = cfg.seed
    return identity


def requests_hash(requests: list[dict]) -> str:
    """Return a hash of the requests' order and content (what the chunks are cut from)."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(json.dumps(r, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def plan_evaluation(out_dir: Path, identity: dict, requests: list[dict], fresh_sizes: list[int]) -> tuple[list[int], bool]:
    """Return (chunk sizes in requests, resumed): the saved plan's when it is this evaluation's, else
    ``fresh_sizes`` (saved). Raises ValueError when ``out_dir`` holds committed chunks of another one."""
    path, store = out_dir / "plan.json", ChunkStore(out_dir)
    wanted = {"identity_hash": config_hash(identity), "requests_hash": requests_hash(requests)}
    if path.is_file():
        saved = read_json(path)
        if all(saved.get(k) == v for k, v in wanted.items()):
            return saved["chunk_sizes"], True
        if store.summaries():
            keys = dict.fromkeys([*identity, *saved.get("identity", {})])
            changed = [k for k in keys if saved.get("identity", {}).get(k) != identity.get(k)] or ["the questions"]
            raise ValueError(f"{out_dir} holds an evaluation of another {' / '.join(changed)} (plan "
                             f"{saved.get('identity_hash')}, now {wanted['identity_hash']}); use a new run_dir or "
                             f"delete {out_dir}")
        log.warning("replacing the plan of an earlier evaluation start that committed no chunk")
        for sub in ("shards", "rejected", "chunks", "attempts"):
            remove_path(out_dir / sub)
    write_json_atomic(path, {**wanted, "identity": identity, "chunk_sizes": fresh_sizes})
    return fresh_sizes, False
