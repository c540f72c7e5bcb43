"""The paper-fidelity table: each paper job config's settings next to the official recipe's, and why they differ.

    python cluster/fidelity.py           rewrite the table in README.md (between its two markers)
    python cluster/fidelity.py --check   exit 1 if README.md's table differs from what this writes

Our values are read from the loaded ``jobs/configs/*.yaml``; the official ones are written down here
once, from the official code (1KE-JI/UPFT at 05f4027: ``scripts/train_sft.sh``, ``train/train_sft.py``,
``inference/vllm_inference.py``, ``inference/eval.py``, ``inference/chat_template.py``) and the paper, as
summarised in the project's UPFT notes. Where the paper's text and the official script disagree, a row
says both and which one we follow, and why. A setting that differs from the official value without a
reason here is an error, so the table can neither go stale nor hide a difference. The columns are the
UPFT runs; every other paper config (SFT, RFT, label filter, base) is checked to be its UPFT run with
only the method's settings changed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # doc_blocks: generated blocks in hand-written Markdown

from doc_blocks import find_block, write_or_check  # noqa: E402

from upft_ray.config import PipelineConfig, config_to_dict, load_config  # noqa: E402
from upft_ray.config.types import UPFT_TASK_TEMPLATE  # noqa: E402
from upft_ray.reporting.paper_tables import ROWS  # noqa: E402

# The UPFT runs (the table's columns), each named MODEL-DATA
RUNS = ("llama-prm12k", "qwen-math-prm12k", "qwen-math-omi2", "qwen-math-limo", "qwen-math-uhard",
        "r1distill-limo", "r1distill-uhard", "r1distill-prm12k")
BEGIN = "<!-- fidelity table: written by `python cluster/fidelity.py` from jobs/configs/ -->"
END = "<!-- end of fidelity table -->"
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
# What each other paper config may change in the config it is built on (everything else must be equal).
VARIANT_MAY_CHANGE = {"sft": {"run_dir", "sample.method", "eval.evaluate_base"},
                      "rft16": {"run_dir", "sample.method", "sample.num_samples", "eval.evaluate_base"},
                      "label-filter": {"run_dir", "sample.method", "sample.num_samples", "eval.evaluate_base"},
                      "base": {"run_dir"}}
BASE_OF = {"llama-base": "llama-prm12k", "qwen-math-base": "qwen-math-omi2", "r1distill-base": "r1distill-limo"}


def _model(run: str) -> str:
    return run.split("-")[0] if not run.startswith("qwen-math") else "qwen-math"


def _data(run: str) -> str:
    return run.rsplit("-", 1)[1]


@dataclass(frozen=True)
class Setting:
    """One row: what we do (read from a loaded config), what the official code does, what the paper's text
    says where it disagrees with the code, and why we differ from the code."""

    label: str
    ours: Callable[[PipelineConfig], Any]
    official: Any  # one value for every run, or a function of the run's name
    why: str = ""  # required wherever ours differs from the official value
    paper_text: str = ""  # the paper's text where it disagrees with the official script

    def official_for(self, run: str) -> Any:
        """Return the official value for ``run``."""
        return self.official(run) if callable(self.official) else self.official


def _per_model(llama: Any, qwen: Any, r1: Any) -> Callable[[str], Any]:
    return lambda run: {"llama": llama, "qwen-math": qwen, "r1distill": r1}[_model(run)]


def _per_data(**values: Any) -> Callable[[str], Any]:
    return lambda run: values[_data(run)]


def _template(cfg: PipelineConfig) -> str:
    sample, evaluate = cfg.sample.engine.chat_template, cfg.eval.engine.chat_template
    system = "" if cfg.sample.system_prompt in ("", BOXED) else f" + system prompt {cfg.sample.system_prompt!r}"
    return (sample if sample == evaluate else f"{sample} (sampling) / {evaluate} (evaluation)") + system


_LR_WHY = ("the paper's text gives 1e-6 for PRM and U-Hard and 2e-6 for LIMO; the script holds one value for every "
           "run (2e-6). We follow the paper's text where it names a value: it states it per dataset, while a "
           "shared script keeps whichever run was launched last; OMI2, which the text leaves open, takes the "
           "script's 2e-6")
SETTINGS = [
    Setting("model", lambda c: c.model, _per_model("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-Math-7B-Instruct",
                                                   "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")),
    Setting("seed", lambda c: c.seed, 42),
    Setting("prefix length t (`sample.prefix_tokens`)", lambda c: c.sample.prefix_tokens, _per_model(8, 32, 128)),
    Setting("structure ratio p (`sample.structure_ratio`)", lambda c: c.sample.structure_ratio,
            lambda run: 0.3 if _data(run) == "limo" else 0.1),
    Setting("which rows are full", lambda c: "seeded draw per question id", "the first floor(p x N) rows",
            "row order is not random (a defect of the official code); the seeded draw makes p mean what it says"),
    Setting("task template on prefix rows", lambda c: "App. A.1" if c.sample.task_template == UPFT_TASK_TEMPLATE
            else c.sample.task_template, "App. A.1"),
    Setting("chat template (`engine.chat_template`)", _template,
            _per_model("llama-3.1-upft", "qwen-math-upft", "deepseek-r1-upft")),
    Setting("sampling temperature", lambda c: c.sample.temperature, 0.6),
    Setting("sampling top_p / top_k", lambda c: f"{c.sample.top_p} / {c.sample.top_k}", "model / model"),
    Setting("samples per question", lambda c: c.sample.num_samples, 1),
    Setting("tokens decoded per row", lambda c: f"t on prefix rows, <= {c.sample.max_new_tokens} on full rows",
            "up to 16384 on every row, cut at training",
            "decoding only what is trained on is the paper's sampling saving; full rows stop within the training "
            "max length, past which they would be cut anyway"),
    Setting("prefix row", lambda c: "first t sampled tokens + EOS", "first t whitespace words, re-tokenised, + EOS",
            "t counts tokens in the paper; the official code's word split is re-tokenised and then cut to t + 1 "
            "tokens, which rarely differs"),
    Setting("EOS after a prefix (`train.prefix_eos`)", lambda c: c.train.prefix_eos, "loss"),
    Setting("loss normalisation", lambda c: c.train.loss_normalization, "example"),
    Setting("global batch (workers x micro x accumulation)",
            lambda c: c.train.num_workers * c.train.micro_batch_size * c.train.gradient_accumulation_steps, 64,
            paper_text="8-64"),
    Setting("micro-batch", lambda c: c.train.micro_batch_size, 1,
            "with per-example normalisation over the global batch the gradient does not depend on the "
            "micro-batch; 4 is for throughput"),
    Setting("packing", lambda c: c.train.packing, False),
    Setting("learning rate", lambda c: c.train.learning_rate, 2e-6, _LR_WHY,
            paper_text="1e-6 (PRM, U-Hard), 2e-6 (LIMO), none (OMI2)"),
    Setting("AdamW betas", lambda c: (c.train.adam_beta1, c.train.adam_beta2), (0.9, 0.95)),
    Setting("weight decay", lambda c: c.train.weight_decay, 0.0),
    Setting("gradient clipping", lambda c: c.train.max_grad_norm, 1.0),
    Setting("schedule", lambda c: f"{c.train.lr_schedule}, {c.train.warmup_ratio:g} warm-up", "constant, 0.03 warm-up"),
    Setting("epochs", lambda c: c.train.epochs, _per_data(prm12k=2, omi2=1, limo=3, uhard=1)),
    Setting("last incomplete batch of an epoch (`train.epoch_tail`)",
            lambda c: {"carry": "carried into the next epoch's first step", "drop": "dropped"}[c.train.epoch_tail],
            "carried into the next epoch's first step"),
    Setting("max length", lambda c: c.train.max_length, _per_model(3072, 3072, 16384),
            "the paper's text gives 4096 (the script 3072): we follow the text; a longer limit only keeps more of "
            "the rare long full solutions", paper_text="4096 (16384 for R1-Distill)"),
    Setting("precision", lambda c: c.train.precision, "bf16"),
    Setting("ZeRO stage, Adam offload", lambda c: f"{c.train.zero_stage}, {c.train.offload_optimizer}", "3, True"),
    Setting("gradient checkpointing", lambda c: c.train.gradient_checkpointing, True),
    Setting("eval decoding", lambda c: c.eval.decoding, "greedy"),
    Setting("eval new tokens / context", lambda c: f"{c.eval.max_new_tokens} / {c.eval.engine.max_model_len}",
            _per_model("16384 / 8192", "16384 / 4096", "16384 / 8192"),
            "16,384 new tokens cannot fit in the official context; both stop at the context's end (each answer "
            "gets what its prompt leaves), and our config refuses a limit the context cannot reach"),
    Setting("eval benchmarks", lambda c: ", ".join(b.split(":")[0] for b in c.eval.benchmarks),
            "gsm8k, math500, aime2024, gpqa_free"),
    Setting("eval prompt", lambda c: "the question", "the question + \"1\"",
            "the official script appends \"1\" to every prompt, a bug"),
    Setting("grading", lambda c: "rule" if not _judge(c) else f"rule or judge ({_judge(c)})",
            "rule or the Omni-Judge LLM",
            "rule-only by default (no judge model is assumed to be at hand); `eval.judge.model=PATH` adds the "
            "official judge prompt and reports rule, judge and rule-or-judge accuracy"),
]


def _judge(cfg: PipelineConfig) -> str:
    judge = getattr(cfg.eval, "judge", None)
    return getattr(judge, "model", "") if judge is not None else ""


def job_config(run: str) -> PipelineConfig:
    """Return the loaded job config ``jobs/configs/RUN.yaml``."""
    return load_config(ROOT / "jobs" / "configs" / f"{run}.yaml")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def variants() -> dict[str, tuple[str, str]]:
    """Return {paper config that is not a UPFT run: (the UPFT run it is built on, its kind)}, e.g.
    ``qwen-math-prm12k-rft16: (qwen-math-prm12k, rft16)``."""
    out = {}
    for name in dict.fromkeys(r.config for r in ROWS if r.config and r.config not in RUNS):
        run = BASE_OF.get(name) or max((r for r in RUNS if name.startswith(r + "-")), key=len)
        out[name] = (run, "base" if name in BASE_OF else name[len(run) + 1:])
    return out


def variant_differences(name: str, run: str) -> set[str]:
    """Return the dotted settings in which paper config ``name`` differs from the UPFT run ``run``."""
    ours, theirs = _flat(config_to_dict(job_config(name))), _flat(config_to_dict(job_config(run)))
    return {k for k in ours if ours[k] != theirs.get(k)}


def _show(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "`" + text.replace("|", "\\|") + "`"


def _row(s: Setting, configs: dict[str, PipelineConfig]) -> str:
    """Return one table line. Raises ValueError when the setting differs without a reason."""
    cells, differs = [], False
    for run in RUNS:
        ours, official = s.ours(configs[run]), s.official_for(run)
        differs |= ours != official
        cells.append(f"{_show(ours)} ✓" if ours == official else f"{_show(ours)} ≠ {_show(official)}")
    if differs and not s.why:
        raise ValueError(f"{s.label}: differs from the official recipe ({cells}) and no reason is given")
    return f"| {s.label} | " + " | ".join(cells) + f" | {s.paper_text} | {s.why if differs else ''} |"


def fidelity_table() -> str:
    """Return the markdown table (with the lines around it) for the README.

    Raises ValueError when a setting differs from the official value without a reason, or a baseline or
    base config changes more than its kind may (VARIANT_MAY_CHANGE)."""
    configs = {run: job_config(run) for run in RUNS}
    lines = ["| setting | " + " | ".join(f"`{r}`" for r in RUNS) + " | the paper's text, where the script "
             "differs | where we differ, and why |", "|---|" + "---|" * len(RUNS) + "---|---|"]
    lines += [_row(s, configs) for s in SETTINGS]
    for name, (run, kind) in variants().items():
        if extra := variant_differences(name, run) - VARIANT_MAY_CHANGE[kind]:
            raise ValueError(f"jobs/configs/{name}.yaml: changes {sorted(extra)} of {run}.yaml besides "
                             f"{sorted(VARIANT_MAY_CHANGE[kind])}")
    built = "; ".join(f"`{n}`: {k}" for n, (_, k) in variants().items())
    return "\n".join([BEGIN, "", "`ours ✓`: the same as the official code; `ours ≠ official` otherwise. Columns: "
                      "the UPFT runs. The other paper configs are their UPFT run with only the method's settings "
                      "changed (checked: `sample.method`, `sample.num_samples` for K = 16, their own `run_dir`, no "
                      f"second base evaluation; a base config only its `run_dir`): {built}.", "", *lines, "", END])


def readme_with_table(readme: str) -> str:
    """Return ``readme`` with the text between the markers replaced by the current table.

    Raises ValueError when the README lacks the markers, or holds them twice or out of order."""
    return readme.replace(find_block(readme, BEGIN, END, "README.md"), fidelity_table())


def main() -> int:
    path = ROOT / "README.md"
    if not write_or_check(path, readme_with_table(path.read_text()), "--check" in sys.argv):
        print("README.md's paper-fidelity table is stale: run python cluster/fidelity.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
