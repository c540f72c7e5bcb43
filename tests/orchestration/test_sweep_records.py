"""sweep.records_dir: a sweep's finished runs outlive their machine (kept records, restored on a fresh one)."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.config import load_config
from upft_ray.config.hashing import base_results_config, results_config
from upft_ray.io.schema import EVAL_SCHEMA
from upft_ray.orchestration import stages as pipeline
from upft_ray.orchestration.sweep import claim_run, plan_sweep, restore_kept_runs, sweep_runs
from upft_ray.orchestration.sweep_records import keep_records, record_files, restore_records

SWEEP_YAML = """run_dir: {run}
eval:
  benchmarks: [bundled:arith-eval]
sweep:
  records_dir: {records}
  seeds: [1, 2]
  variants:
    - name: upft
    - name: sft
      overrides: [sample.method=sft]
"""
RIGHT = {"base": 10, "upft-s1": 6, "upft-s2": 8, "sft-s1": 10, "sft-s2": 13}


def _finished(run_dir, sub, right):
    """Write a finished run's files: records (manifests, metrics, per-question results) and bulk beside them."""
    eval_dir = run_dir / sub
    eval_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict({
        "benchmark": ["arith-eval"] * 20, "question_id": [f"q{i}" for i in range(20)], "sample_index": [0] * 20,
        "question": ["?"] * 20, "prompt": ["?"] * 20, "output": ["x"] * 20, "extracted_answer": ["1"] * 20,
        "gold": ["1"] * 20, "correct": [i < right for i in range(20)], "num_output_tokens": [9] * 20,
        "finish_reason": ["stop"] * 20, "grade_status": ["ok"] * 20, "grade_error": [""] * 20},
        schema=EVAL_SCHEMA), eval_dir / "arith-eval.parquet")
    (eval_dir / "metrics.json").write_text(json.dumps({"benchmarks": {"arith-eval": {
        "accuracy": right / 20, "correct": right, "graded": 20}}}))
    (eval_dir / "shards").mkdir()
    (eval_dir / "shards" / "chunk-0.parquet").write_bytes(b"bulk")  # the executor's chunks: not records
    if sub == "eval":
        (run_dir / "sample").mkdir()
        (run_dir / "sample" / "manifest.json").write_text(json.dumps({
            "prefix_tokens": 8, "wall_time_s": 5, "tokens": {"generated": 160 + right}, "counts": {"rows_in": 20},
            "config": {"prefix_tokens": 8, "method": "upft"}}))
        (run_dir / "train" / "final").mkdir(parents=True)
        (run_dir / "train" / "manifest.json").write_text(json.dumps({"wall_time_s": 7, "counts": {"tokens_tuned": 99}}))
        (run_dir / "train" / "final" / "model.safetensors").write_bytes(b"weights")


def _finished_sweep(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP_YAML.format(run=tmp_path / "sweep", records=tmp_path / "records"))
    cfg = load_config(config)
    claim_run(cfg.run_path / "base", base_results_config(cfg))
    _finished(cfg.run_path / "base", "eval_base", RIGHT["base"])
    for variant, seed, run_cfg in sweep_runs(cfg):
        claim_run(run_cfg.run_path, results_config(run_cfg))
        _finished(run_cfg.run_path, "eval", RIGHT[f"{variant}-s{seed}"])
    return config, cfg


def test_records_are_the_small_files_and_a_fresh_machine_gets_the_same_report(tmp_path):
    config, cfg = _finished_sweep(tmp_path)
    report, failures = pipeline.sweep(cfg)
    assert failures == {}
    before = report.read_text()
    assert "## Token efficiency" in before and "| UPFT | 4 | 20 x 1 | 169 | 99 |" in before
    records = tmp_path / "records"
    # runs finished before records_dir was set are kept by the next sweep; only records, no weights or chunks
    assert sorted(p.name for p in records.iterdir()) == ["base", "sft-s1", "sft-s2", "upft-s1", "upft-s2"]
    assert [str(p) for p in record_files(records / "upft-s1")] == [
        "eval/arith-eval.parquet", "eval/metrics.json", "machine.json", "sample/manifest.json", "sweep_run.json",
        "train/manifest.json"]
    cpu = json.loads((records / "upft-s1" / "machine.json").read_text())["cpu"]
    assert f"## Machines\n\n- {cpu} x" in before and ": base, upft-s1, sft-s1, upft-s2, sft-s2\n" in before
    assert not (records / "upft-s1" / "train" / "final").exists() and not (records / "base" / "eval_base" / "shards").exists()
    # a fresh machine: the run directories are gone; the sweep restores them, runs nothing, reports the same
    shutil.rmtree(cfg.run_path)
    report, failures = pipeline.sweep(load_config(config))
    assert failures == {} and report.read_text() == before
    runs, states, base = plan_sweep(cfg)
    assert base[0] == "done" and {state for state, _ in states.values()} == {"done"}
    assert not (cfg.run_path / "upft-s1" / "train" / "final").exists()  # what was not kept is not invented


def test_restore_never_touches_an_existing_run_and_kept_records_of_another_config_are_refused(tmp_path):
    config, cfg = _finished_sweep(tmp_path)
    restore_kept_runs(cfg)
    records = tmp_path / "records"
    shutil.rmtree(cfg.run_path / "sft-s2")
    half_done = cfg.run_path / "sft-s2"
    claim_run(half_done, results_config(sweep_runs(cfg)[3][2]))  # started again here, not finished
    assert restore_records([half_done], records) == []
    assert not (half_done / "eval").exists()
    # records made with another learning rate: restored as what they are, then refused, never reported
    shutil.rmtree(cfg.run_path)
    other = load_config(config, ["train.learning_rate=2e-5"])
    report, failures = pipeline.sweep(other)
    assert set(failures) == {"upft-s1", "upft-s2", "sft-s1", "sft-s2"}
    assert "train.learning_rate (1e-05 -> 2e-05)" in failures["upft-s1"]
    assert "| upft | UPFT | 0/2 |" in report.read_text()


def test_kept_records_replace_older_ones_whole(tmp_path):
    config, cfg = _finished_sweep(tmp_path)
    records = tmp_path / "records"
    run = cfg.run_path / "upft-s1"
    keep_records(run, records)
    (run / "train" / "manifest.json").unlink()
    keep_records(run, records)
    assert not (records / "upft-s1" / "train").exists()  # no file left over from the older copy
    assert not [p for p in records.iterdir() if p.name.startswith(".")]  # no staging directory left behind
    shutil.rmtree(run / "eval")
    try:
        keep_records(run, records)
    except FileNotFoundError as err:
        assert "no finished evaluation" in str(err)
    else:
        raise AssertionError("an unfinished run was kept")


def test_a_run_whose_records_cannot_be_kept_stays_done_and_a_later_sweep_keeps_them(tmp_path, caplog):
    config, cfg = _finished_sweep(tmp_path)
    broken = cfg.run_path / "sft-s1" / "train" / "final" / "config.json"
    broken.write_text("{ not json")  # weights that cannot be loaded: its P(EOS) cannot be measured
    report, failures = pipeline.sweep(cfg)
    assert failures == {} and "| sft | SFT | 2/2 |" in report.read_text()
    assert "sft-s1: records not kept" in caplog.text and not (tmp_path / "records" / "sft-s1").exists()
    broken.unlink()  # the weights are gone: the records are kept without the run's P(EOS)
    pipeline.sweep(cfg)
    assert (tmp_path / "records" / "sft-s1" / "eval" / "metrics.json").is_file()


def test_runs_made_on_two_kinds_of_cpu_are_named_and_warned_of(tmp_path):
    config, cfg = _finished_sweep(tmp_path)
    restore_kept_runs(cfg)  # kept here: each run's machine.json names this machine
    other = tmp_path / "records" / "sft-s2" / "machine.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "cpu": "Other CPU", "cpu_count": 8,
                                 "cpu_native_bf16": False}))
    shutil.rmtree(cfg.run_path)  # a fresh machine restores runs kept on two machines
    report, failures = pipeline.sweep(cfg)
    text = report.read_text()
    assert failures == {} and "- Other CPU x8, no native bf16: auto = fp32: sft-s2\n" in text
    assert "more than one kind of machine" in text


def test_a_finished_run_of_another_config_is_never_kept(tmp_path):
    config, cfg = _finished_sweep(tmp_path)  # finished before records_dir was set: nothing kept yet
    records = tmp_path / "records"
    other = sweep_runs(load_config(config, ["train.learning_rate=2e-5"]))[0][2]
    claim_run(other.run_path, results_config(other))  # upft-s1 now holds results of another learning rate
    restore_kept_runs(cfg)
    kept = sorted(p.name for p in records.iterdir())
    assert kept == ["base", "sft-s1", "sft-s2", "upft-s2"]  # the stale run would be restored only to be refused


def test_machines_section_says_what_auto_precision_chose_on_each_machine(tmp_path):
    from upft_ray.orchestration.sweep_records import machines_section

    facts = {"a-s1": {"cpu_native_bf16": True}, "b-s1": {"cpu_native_bf16": False}, "c-s1": {}, "d-s1": None}
    for name, extra in facts.items():
        (tmp_path / name).mkdir()
        if extra is not None:
            (tmp_path / name / "machine.json").write_text(json.dumps({"cpu": "EPYC", "cpu_count": 2, **extra}))
    lines = machines_section([tmp_path / name for name in facts])
    assert lines[3:7] == ["- EPYC x2, native bf16: auto = bf16: a-s1", "- EPYC x2, no native bf16: auto = fp32: b-s1",
                          "- EPYC x2: c-s1", "- not recorded: d-s1"]
    assert "more than one kind of machine" in lines[-1]
    assert "- not recorded: a-s1, b-s1, c-s1, d-s1" in lines  # runs without stage records


def test_ran_in_reads_each_stages_own_record_of_its_precision(tmp_path):
    from upft_ray.orchestration.sweep_records import machines_section, ran_in

    def run(name, **records):
        for record, content in records.items():
            path = tmp_path / name / record.replace("__", "/") / ("metrics.json" if "eval" in record else
                                                                     "manifest.json")
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(content))
        (tmp_path / name / "machine.json").write_text(json.dumps({"cpu": "EPYC", "cpu_count": 2}))
        return tmp_path / name

    new = run("upft-s1", sample={"engine_dtypes": ["bfloat16"]}, train={"trained_with": {"precision": "fp32"}},
              eval={"engine_dtypes": ["bfloat16", "float32"]})
    base = run("base", eval_base={"engine_dtypes": ["float32"]})
    old = run("sft-s1", sample={}, train={"trained_with": None}, eval={})  # made before the fields existed
    half = run("rft-s1", sample={}, train={"trained_with": {"precision": "bf16"}}, eval={})
    assert ran_in(new) == "sampled bfloat16, trained fp32, evaluated bfloat16, float32"
    assert ran_in(base) == "evaluated float32" and ran_in(old) == "not recorded"
    assert ran_in(half) == "sampled not recorded, trained bf16, evaluated not recorded"
    lines = machines_section([base, new, old, half])
    assert lines[-4:] == ["- evaluated float32: base", "- sampled bfloat16, trained fp32, evaluated bfloat16, float32: "
                          "upft-s1", "- not recorded: sft-s1", "- sampled not recorded, trained bf16, evaluated not "
                          "recorded: rft-s1"]
