"""Distributed evaluation gives the same per-question results as one engine in one process."""

import asyncio

import numpy as np
import pandas as pd

from conftest import tiny_overrides
from upft_ray.config import config_to_dict, load_config
from upft_ray.evaluation.evaluator import build_eval_requests, grade_batch, run_evaluate
from upft_ray.inference import VLLMGenerator


def test_two_actors_match_a_single_process_run(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + [
        "eval.max_questions=20", "eval.engine.num_replicas=2", "eval.engine.batch_size=4",
        "eval.engine.dtype=float32", "eval.benchmarks=[bundled:arith-eval]"])
    metrics = run_evaluate(cfg, str(tiny_model_dir), tmp_path / "eval", "tiny")
    distributed = pd.read_parquet(tmp_path / "eval" / "arith-eval.parquet").set_index("question_id")
    assert metrics["benchmarks"]["arith-eval"]["graded"] == 20 == len(distributed)

    requests, _, _ = build_eval_requests(cfg)
    batch = {key: np.array([r[key] for r in requests], dtype=object) for key in requests[0]}
    engine = VLLMGenerator(str(tiny_model_dir), config_to_dict(cfg.eval.engine), cfg.seed)
    single = grade_batch(pd.DataFrame(asyncio.run(engine(batch)))).set_index("question_id")
    joined = distributed.join(single, rsuffix="_single")
    assert (joined["output"] == joined["output_single"]).all()
    assert (joined["correct"] == joined["correct_single"]).all()
    assert (joined["num_output_tokens"] == joined["num_output_tokens_single"]).all()
