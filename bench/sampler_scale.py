"""Sampler scale: stream 60K and 600K synthetic questions through ``upft sample``; rows/s and peak RSS.

The engine is a STAND-IN (``StandInEngine`` below, plugged in as ``sample.engine.backend`` =
``sampler_scale:StandInEngine``, README "Engine backends"): it fabricates prompt and response token ids
without a model, so the figures measure the pipeline's own cost (planning, Ray Data read tasks,
hand-offs to the actor, shard and summary writes, the manifest), not generation. Everything else
is the real sampler: the same plan, read step, chunk worker actor and manifest.

Memory is sampled every 0.5 s over the driver and all its child processes (Ray's raylet, GCS and
workers of the private local Ray): the peak of the tree's summed USS (private memory only: what a leak
grows), the peak of its summed PSS (shared pages such as Ray's
object store and libraries split between the processes that map them, so nothing is counted twice),
the peak of its summed RSS (shared pages counted once per process), and the driver's own peak RSS.
Memory that does not grow with the dataset is the point: the goal is peak 600K / peak 60K <= 1.1 for the
tree's USS and the driver's RSS. PSS and RSS also count the pages of Ray's shared object store that each
process has touched, which grow with the data streamed through until they reach the store's size.
Figures go to bench/results/sampler_scale.json and the "sampler-scale" block of bench/RESULTS.md. Run it
with nothing else on the cores.

    .venv/bin/python bench/sampler_scale.py [--sizes 60000,600000] [--rows-per-shard 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from doc_blocks import markers, replace_block  # noqa: E402

from upft_ray.config import load_config  # noqa: E402
from upft_ray.io.manifests import write_json_atomic  # noqa: E402
from upft_ray.runtime.hardware import machine_facts  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "sampler_scale.json"
BEGIN, END = markers("sampler-scale", "bench/sampler_scale.py")


class StandInEngine:
    """NOT A MODEL: returns made-up token ids of the requested length, to time the pipeline alone."""

    def __init__(self, model: str, engine, seed: int):
        self.rng = np.random.default_rng(seed)

    async def __call__(self, batch: dict) -> dict:
        n = len(batch["messages"])
        prompt_ids = [np.arange(len(m) // 4, dtype=np.int64) for m in batch["messages"]]
        response_ids = [self.rng.integers(0, 1000, size=int(k), dtype=np.int64) for k in batch["max_tokens"]]
        batch["prompt"] = batch["messages"]
        batch["prompt_token_ids"] = _objects(prompt_ids)
        batch["num_prompt_tokens"] = np.array([len(p) for p in prompt_ids], dtype=np.int64)
        batch["response_text"] = np.array(["stand-in"] * n, dtype=object)
        batch["response_token_ids"] = _objects(response_ids)
        batch["num_response_tokens"] = np.array([len(r) for r in response_ids], dtype=np.int64)
        batch["finish_reason"] = np.array(["length"] * n, dtype=object)
        return batch


def _objects(arrays):
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def write_questions(path: Path, n: int) -> None:
    """Write ``n`` synthetic arithmetic questions as JSONL (OMI2-sized text: ~200 characters each)."""
    with path.open("w") as fh:
        for i in range(n):
            q = (f"A farmer has {i % 97 + 3} rows of {i % 13 + 2} trees and plants {i % 7 + 1} more trees in each "
                 f"row every year for {i % 5 + 1} years. How many trees does the farmer have at the end? (#{i})")
            fh.write(json.dumps({"id": f"s{i:07d}", "question": q, "answer": "0"}) + "\n")


class PeakRSS:
    """Samples the memory of this process and its children in a thread; keeps the peaks (bytes)."""

    def __init__(self, every_s: float = 0.5):
        import psutil

        self.me, self.every_s = psutil.Process(), every_s
        self.tree_uss = self.tree_pss = self.tree_rss = self.driver_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            uss = pss = rss = 0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    uss, pss, rss = uss + info.uss, pss + info.pss, rss + info.rss
                except psutil.Error:
                    pass
            self.tree_uss = max(self.tree_uss, uss)
            self.tree_pss, self.tree_rss = max(self.tree_pss, pss), max(self.tree_rss, rss)
            self.driver_rss = max(self.driver_rss, self.me.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_size(n: int, rows_per_shard: int, tmp: Path) -> dict:
    """Sample ``n`` synthetic questions with the stand-in engine; return rows/s and peak RSS."""
    import ray

    from upft_ray.runtime.ray_session import ray_session
    from upft_ray.sampling.pipeline import run_sample

    source = tmp / f"questions-{n}.jsonl"
    write_questions(source, n)
    cfg = load_config(None, [f"run_dir={tmp / f'run-{n}'}", f"sample.questions={source}",
                             f"sample.rows_per_shard={rows_per_shard}", "sample.max_new_tokens=64",
                             "ray.num_cpus=4", "model=smollm2-135m-instruct",
                             "sample.engine.backend=sampler_scale:StandInEngine"])
    with PeakRSS() as rss, ray_session(cfg.ray):
        started = time.time()
        manifest = run_sample(cfg)
        seconds = time.time() - started
    assert not ray.is_initialized()
    c = manifest["counts"]
    assert c["rows_in"] == n == c["questions_written"] + c["rows_rejected"], c
    return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "shards": manifest["shards"]["total"],
            "tree_uss_mib": rss.tree_uss / 2**20, "tree_pss_mib": rss.tree_pss / 2**20,
            "tree_rss_mib": rss.tree_rss / 2**20,
            "driver_rss_mib": rss.driver_rss / 2**20}


def main() -> None:
    # The Ray workers this script starts import the stand-in engine from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="60000,600000")
    parser.add_argument("--rows-per-shard", type=int, default=1024)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            results.append(run_size(n, args.rows_per_shard, Path(tmp)))
            print(f"[bench] {json.dumps(results[-1])}", flush=True)
    report = {"command": "bench/sampler_scale.py --sizes " + args.sizes, "rows_per_shard": args.rows_per_shard,
              "machine": machine_facts(), "sizes": results}
    write_json_atomic(RESULTS, report)
    block = results_block(report)
    replace_block(REPO_ROOT / "bench" / "RESULTS.md", BEGIN, END, block)
    print(block)


def results_block(report: dict) -> str:
    """Return RESULTS.md's sampler-scale block (markers included): the table and the peak ratios."""
    m, results = report["machine"], report["sizes"]
    lines = [BEGIN, "", f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']}, "
             f"STAND-IN engine (no model), rows_per_shard {report['rows_per_shard']}, 4 logical CPUs:", "",
             "| rows | shards | seconds | rows/s | peak USS, process tree (MiB) | peak PSS, process tree (MiB) "
             "| peak RSS, process tree (MiB) | peak RSS, driver (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['shards']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} "
                     f"| {r['tree_uss_mib']:,.0f} | {r['tree_pss_mib']:,.0f} | {r['tree_rss_mib']:,.0f} "
                     f"| {r['driver_rss_mib']:,.0f} |")
    if len(results) >= 2:
        small, big = results[0], results[-1]
        ratio = {k: big[k] / small[k] for k in ("tree_uss_mib", "tree_pss_mib", "tree_rss_mib", "driver_rss_mib")}
        met = "met" if max(ratio["tree_uss_mib"], ratio["driver_rss_mib"]) <= 1.1 else "NOT met"
        lines += ["", f"**peak {big['rows']:,} / peak {small['rows']:,}: tree USS {ratio['tree_uss_mib']:.3f}, driver "
                      f"RSS {ratio['driver_rss_mib']:.3f}** (goal <= 1.1: {met}); tree PSS {ratio['tree_pss_mib']:.3f}, "
                      f"tree RSS {ratio['tree_rss_mib']:.3f} (shared object-store pages included, see below)."]
    return "\n".join([*lines, "", END])


if __name__ == "__main__":
    main()
