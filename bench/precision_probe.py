"""Which precision did a kept sweep's base evaluation run in? For runs made before stage records said so.

    .venv/bin/python bench/precision_probe.py configs/ablation-qwen05b.yaml    # its model prepared first

A sweep's records (``sweep.records_dir``) keep the base evaluation's answers, not whether vLLM ran in bf16 or
fp32 (``engine.dtype: auto`` decides from the CPU; runs before 2026-12-08 did not record it). Greedy answers
depend on the dtype, so the probe evaluates the base model again on the first ``--questions`` of the recorded
benchmark in each dtype, on this machine (`upft evaluate ... eval.engine.dtype=D`), and counts the answers
identical to the recorded ones: the dtype that reproduces (nearly) all of them is the one the record ran in.
Writes ``bench/results/precision_NAME.json`` and the ``precision-NAME`` block of bench/RESULTS.md (NAME: the
config's file name). The same CPU kind matters: decoding is not bit-identical across CPU models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from doc_blocks import markers, replace_block  # noqa: E402

from upft_ray.config import load_config  # noqa: E402
from upft_ray.io.manifests import write_json_atomic  # noqa: E402
from upft_ray.runtime.hardware import machine_facts  # noqa: E402

DTYPES = ("bfloat16", "float32")


def names(config: Path) -> tuple[str, Path, tuple[str, str]]:
    """Return (NAME, its results JSON, its block markers) for the sweep config ``config``."""
    name = config.stem.replace("ablation-", "").replace("-", "_")
    return name, REPO / "bench" / "results" / f"precision_{name}.json", \
        markers(f"precision-{name}", f"bench/precision_probe.py {config.as_posix()}")


def recorded_answers(config: Path) -> tuple[str, pd.DataFrame]:
    """Return (benchmark, its recorded base answers) from the sweep's kept base evaluation."""
    cfg = load_config(config)
    base = REPO / cfg.sweep.records_dir / "base" / "eval_base"
    benchmark = sorted(json.loads((base / "metrics.json").read_text())["benchmarks"])[0]
    return benchmark, pd.read_parquet(base / f"{benchmark}.parquet")


def evaluate(config: Path, dtype: str, questions: int, work: Path) -> pd.DataFrame:
    """Return the base model's answers in ``dtype`` on the first ``questions`` (a fresh run in ``work``)."""
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([str(REPO / ".venv" / "bin" / "upft"), "evaluate", "-c", str(config), "--run-dir", str(work),
                    "--model", "base", f"eval.max_questions={questions}", f"eval.engine.dtype={dtype}"],
                   check=True, cwd=REPO, timeout=3600)
    return pd.concat([pd.read_parquet(p) for p in sorted((work / "eval_base").glob("*.parquet"))
                      if p.name != "rejected.parquet"])


def compare(recorded: pd.DataFrame, probed: pd.DataFrame) -> dict:
    """Return how many probed answers equal the recorded ones (joined on question and sample)."""
    keys = ["question_id", "sample_index"]
    joined = probed.merge(recorded, on=keys, suffixes=("", "_recorded"))
    return {"questions": len(joined), "identical": int((joined.output == joined.output_recorded).sum()),
            "correct": int(joined.correct.sum()), "correct_recorded": int(joined.correct_recorded.sum())}


def render(report: dict) -> str:
    """Return the RESULTS block (markers included) for the recorded probe ``report``."""
    _, _, (begin, end) = names(Path(report["command"].split()[1]))
    m = report["machine"]
    lines = [begin, "", f"`python {report['command']}`, {m['date_utc']} UTC, {m['cpu']} x{m['cpu_count']} (native "
             f"bf16: {m.get('cpu_native_bf16')}): the kept base evaluation's first {report['questions']} questions "
             f"of {report['benchmark']}, evaluated again greedily in each dtype.", "",
             "| dtype | answers identical to the recorded | correct (probe) | correct (recorded) |", "|---|---|---|---|"]
    for dtype, c in report["dtypes"].items():
        lines.append(f"| {dtype} | {c['identical']} of {c['questions']} | {c['correct']} | {c['correct_recorded']} |")
    best = max(report["dtypes"], key=lambda d: report["dtypes"][d]["identical"])
    return "\n".join(lines + ["", f"The recorded evaluation ran in **{best}** (the dtype reproducing most answers).",
                              "", end])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--questions", type=int, default=60, help="the first N (one chunk of the base evaluation)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/upft-precision-probe"))
    args = parser.parse_args()
    config = args.config.resolve().relative_to(REPO)
    _, results, (begin, end) = names(config)
    benchmark, recorded = recorded_answers(config)
    dtypes = {d: compare(recorded, evaluate(config, d, args.questions, args.work / d)) for d in DTYPES}
    report = {"command": f"bench/precision_probe.py {config.as_posix()}", "machine": machine_facts(),
              "benchmark": benchmark, "questions": args.questions, "dtypes": dtypes}
    write_json_atomic(results, report)
    block = render(json.loads(results.read_text()))
    replace_block(REPO / "bench" / "RESULTS.md", begin, end, block)
    print(block)


if __name__ == "__main__":
    main()
