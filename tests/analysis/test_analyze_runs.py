"""The analyses on real engines: `upft analyze consistency` on the bundled model, `prefix_tokens: auto`
and the rollouts on the tiny model."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, tiny_overrides

from upft_ray.config import load_config
from upft_ray.orchestration import stages as pipeline

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a vLLM start on the bundled model: ~1 min; the default suite stays under ~15 min
def test_analyze_consistency_cli_on_the_bundled_model(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "upft_ray.cli", "analyze", "consistency", "-c", "configs/quickstart.yaml",
               f"run_dir={run}", "analyze.max_questions=6", "analyze.num_samples=4", "analyze.max_new_tokens=48",
               "analyze.prefix_lengths=[1, 4, 8, 16]", "sample.engine.max_model_len=512"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result_dir = run / "analysis" / "consistency"
    table = pd.read_parquet(result_dir / "consistency.parquet")
    assert len(table) == 6 * 4 and table.groupby("prefix_tokens").size().to_dict() == {1: 6, 4: 6, 8: 6, 16: 6}
    for _, q in table.sort_values("prefix_tokens").groupby("question_id"):
        # longer prefixes can only split groups: agreement never rises with t
        assert q["modal_share"].is_monotonic_decreasing and q["distinct_prefixes"].is_monotonic_increasing
    assert (result_dir / "consistency.png").read_bytes()[:8] == PNG
    result = json.loads((result_dir / "result.json").read_text())
    assert result["questions"] == 6 and result["graded"] and result["chosen_prefix_tokens"] in (1, 4, 8, 16)
    assert "prefix_tokens auto would choose" in out.stderr  # progress and results of a stage are logged
    manifest = json.loads((result_dir / "sample" / "manifest.json").read_text())
    assert manifest["counts"]["rows_written"] == 24 and manifest["config"]["method"] == "sft"


@pytest.mark.slow  # a sampling run and rollouts at each prefix length: ~2 min; the default suite stays under ~15 min
def test_auto_prefix_length_then_rollouts_on_the_tiny_model(tmp_path, tiny_model_dir, ray_local):
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_model_dir) + [
        "sample.prefix_tokens=auto", "analyze.max_questions=4", "analyze.num_samples=3",
        "analyze.prefix_lengths=[1, 2, 4]", "analyze.max_new_tokens=8", "analyze.rollout_questions=2",
        "analyze.rollout_positions=[0.0, 0.5]", "analyze.rollouts_per_position=2"])
    manifest = pipeline.sample(cfg)
    choice = manifest["prefix_tokens_choice"]
    assert manifest["prefix_tokens"] == choice["prefix_tokens"] in (1, 2, 4) and "modal-prefix share" in choice["reason"]
    assert manifest["config_hash"] == pipeline.sample(cfg)["config_hash"]  # a rerun reuses the same choice
    shards = pd.read_parquet(cfg.run_path / "sample" / "shards")
    assert shards.loc[shards["kind"] == "prefix", "num_response_tokens"].max() <= choice["prefix_tokens"]

    result = pipeline.analyze_rollouts(cfg)
    rollouts = pd.read_parquet(cfg.run_path / "analysis" / "rollouts" / "rollouts.parquet")
    rejected = pd.read_parquet(cfg.run_path / "analysis" / "rollouts" / "rejected.parquet")
    assert len(rollouts) + len(rejected) == result["rollouts"] + result["rollouts_rejected"] == result["trajectories"] * 2 * 2
    assert len(rejected) == 0  # every cut of these short solutions fits the engine's context
    assert set(rollouts["position"]) == {0.0, 0.5} and rollouts["correct"].dtype == bool
    assert (cfg.run_path / "analysis" / "rollouts" / "rollouts.png").read_bytes()[:8] == PNG
