"""The paper's job configs read what `upft data prepare` writes: each training set passes the sampler's
start checks and plan, each benchmark the evaluation's, with every row counted (fixtures in the public
releases' own layouts, tests/io/test_prepare.py)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import REPO

from upft_ray.config import load_config
from upft_ray.evaluation.requests import build_eval_requests
from upft_ray.io.prepare import prepare_public_set
from upft_ray.orchestration.preflight import preflight_problems
from upft_ray.sampling.plan import make_plan

PREPARED = "/mnt/shared/data/prepared"


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _releases(root):
    """Write a few rows of each public release in its own layout; return {set name: source path}."""
    root.mkdir(parents=True)
    prm = [{"problem": f"What is {i} + {i}?", "solution": "...", "answer": str(2 * i), "subject": "Algebra",
            "level": 1, "unique_id": f"train/algebra/{i}.json"} for i in range(6)]
    limo = [{"question": f"Hard {i}?", "solution": "...", "answer": str(i)} for i in range(3)]
    uhard = [{"problem": f"U{i}?", "answer": str(i), "id": f"u{i}"} for i in range(4)]
    gsm = [{"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
           for i in range(5)]
    math500 = [{"problem": f"Compute {i}/1.", "solution": f"$\\boxed{{{i}}}$", "answer": str(i), "subject": "Algebra",
                "level": 1, "unique_id": f"test/algebra/{i}.json"} for i in range(4)]
    pq.write_table(pa.table({"problem": ["Solve x+1=2.", "Solve x+1=2.", "Solve x+2=5."],
                             "generated_solution": ["..."] * 3, "expected_answer": ["1", "1", "3"],
                             "problem_source": ["augmented_math"] * 3}), root / "omi2.parquet")
    aime = root / "aime" / "data"
    aime.mkdir(parents=True)
    pq.write_table(pa.table({"id": [60, 61], "problem": ["P1", "P2"], "solution": ["s", "s"], "answer": ["025", "204"],
                             "url": ["u", "u"], "year": ["2024", "2024"]}), aime / "train-00000-of-00001.parquet")
    gpqa = root / "gpqa_diamond.csv"
    gpqa.write_text('"Record ID","Question","Correct Answer","Incorrect Answer 1","Incorrect Answer 2",'
                    '"Incorrect Answer 3","Subdomain"\n"rec1","Which gas?\nExplain.","He","Ne","Ar","Kr","Chem"\n')
    return {"prm12k": _jsonl(root / "prm800k" / "math_splits" / "train.jsonl", prm), "omi2": str(root / "omi2.parquet"),
            "limo": _jsonl(root / "limo.jsonl", limo), "uhard": _jsonl(root / "uhard.jsonl", uhard),
            "gsm8k": _jsonl(root / "gsm8k" / "test.jsonl", gsm), "math500": _jsonl(root / "math500" / "test.jsonl",
                                                                                   math500),
            "aime24": str(root / "aime"), "gpqa-diamond": str(gpqa)}


def test_paper_configs_accept_the_prepared_sets(tmp_path, smollm2_dir):
    out = tmp_path / "prepared"
    written = {name: prepare_public_set(name, source, out)["rows_written"]
               for name, source in _releases(tmp_path / "release").items()}
    assert written == {"prm12k": 6, "omi2": 2, "limo": 3, "uhard": 4, "gsm8k": 5, "math500": 4, "aime24": 2,
                       "gpqa-diamond": 1}
    for run in ("llama-prm12k", "qwen-math-omi2", "qwen-math-limo", "qwen-math-uhard", "r1distill-prm12k"):
        text = (REPO / "jobs" / "configs" / f"{run}.yaml").read_text()
        assert PREPARED in text or "base:" in text
        cfg = load_config(REPO / "jobs" / "configs" / f"{run}.yaml", [f"model={smollm2_dir}",
                                                                      f"run_dir={tmp_path / 'runs' / run}"])
        cfg = cfg.model_copy(update={
            "sample": cfg.sample.model_copy(update={"questions": cfg.sample.questions.replace(PREPARED, str(out))}),
            "eval": cfg.eval.model_copy(update={"benchmarks": [b.replace(PREPARED, str(out))
                                                               for b in cfg.eval.benchmarks]})})
        assert preflight_problems(cfg, ("sample", "train", "evaluate")) == [], run
        data = cfg.sample.questions.rsplit("/", 1)[1].removesuffix(".jsonl")
        plan = make_plan(cfg.sample.questions, cfg.sample.columns_spec(), cfg.sample.rows_per_shard, 0, "h")
        assert plan.records == written[data], run
        requests, rejected, read = build_eval_requests(cfg)
        assert read == {"gsm8k": 5, "math500": 4, "aime2024": 2, "gpqa_free": 1} and not rejected, run
        assert len(requests) == 12
