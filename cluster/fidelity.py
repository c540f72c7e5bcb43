"""The paper-fidelity table: each job config's settings next to the official recipe's, and why they differ.

    python cluster/fidelity.py           rewrite the table in README.md (between its two markers)
    python cluster/fidelity.py --check   exit 1 if README.md's table differs from what this writes

Our values are read from the loaded ``jobs/configs/*.yaml``; the official ones are written down here
once, from the official code (1KE-JI/UPFT at 05f4027: ``scripts/train_sft.sh``, ``train/train_sft.py``,
``inference/vllm_inference.py``, ``inference/eval.py``) and the paper, as summarised in the project's
UPFT notes. A setting that differs from the official value without a reason here is an error, so the
table can neither go stale nor hide a difference.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # doc_blocks: generated blocks in hand-written Markdown

from doc_blocks import find_block  # noqa: E402

from upft_ray.config import PipelineConfig, config_to_dict, load_config  # noqa: E402
from upft_ray.config.types import UPFT_TASK_TEMPLATE  # noqa: E402

RUNS = ("llama-prm12k", "qwen-math-omi2", "qwen-math-uhard", "r1distill-limo")
BEGIN = "<!-- fidelity table: written by `python cluster/fidelity.py` from jobs/configs/ -->"
END = "<!-- end of fidelity table -->"
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
# What an -sft baseline config may change in its UPFT run's config (everything else must be equal).
SFT_MAY_CHANGE = {"run_dir", "sample.method", "eval.evaluate_base"}


@dataclass(frozen=True)
class Setting:
    """One row: what we do (read from a loaded config), what the official recipe does, and why we differ."""

    label: str
    ours: Callable[[PipelineConfig], Any]
    official: Any  # one value for every run, or {run: value}
    why: str = ""  # required wherever ours differs from the official value

    def official_for(self, run: str) -> Any:
        """Return the official value for ``run``."""
        return self.official[run] if isinstance(self.official, dict) else self.official


def _per_model(llama: Any, qwen: Any, r1: Any) -> dict:
    return {"llama-prm12k": llama, "qwen-math-omi2": qwen, "qwen-math-uhard": qwen, "r1distill-limo": r1}


def _system(cfg: PipelineConfig) -> str:
    prompt = cfg.sample.system_prompt
    return "the tokenizer's own template" if not prompt else "boxed system prompt" if prompt == BOXED else prompt


SETTINGS = [
    Setting("model", lambda c: c.model, _per_model("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-Math-7B-Instruct",
                                                   "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")),
    Setting("seed", lambda c: c.seed, 42),
    Setting("prefix length t (`sample.prefix_tokens`)", lambda c: c.sample.prefix_tokens, _per_model(8, 32, 128)),
    Setting("structure ratio p (`sample.structure_ratio`)", lambda c: c.sample.structure_ratio,
            {"llama-prm12k": 0.1, "qwen-math-omi2": 0.1, "qwen-math-uhard": 0.1, "r1distill-limo": 0.3}),
    Setting("which rows are full", lambda c: "seeded draw per question id", "the first floor(p x N) rows",
            "row order is not random (a defect of the official code); the seeded draw makes p mean what it says"),
    Setting("task template on prefix rows", lambda c: "App. A.1" if c.sample.task_template == UPFT_TASK_TEMPLATE
            else c.sample.task_template, "App. A.1"),
    Setting("chat template", _system, _per_model("custom llama-3.1 (empty system block)", "boxed system prompt",
                                                 "custom R1 (no opening think tag)"),
            "we render with the model tokenizer's own chat template; the official custom templates differ in "
            "the system block (Llama) and the opening think tag (R1)"),
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
    Setting("loss normalisation", lambda c: c.train.loss_normalization, "example"),
    Setting("global batch (workers x micro x accumulation)",
            lambda c: c.train.num_workers * c.train.micro_batch_size * c.train.gradient_accumulation_steps, 64),
    Setting("micro-batch", lambda c: c.train.micro_batch_size, 1,
            "with per-example normalisation over the global batch the gradient does not depend on the "
            "micro-batch; 4 is for throughput"),
    Setting("packing", lambda c: c.train.packing, False),
    Setting("learning rate", lambda c: c.train.learning_rate,
            {"llama-prm12k": 1e-6, "qwen-math-omi2": 2e-6, "qwen-math-uhard": 1e-6, "r1distill-limo": 2e-6}),
    Setting("AdamW betas", lambda c: (c.train.adam_beta1, c.train.adam_beta2), (0.9, 0.95)),
    Setting("weight decay", lambda c: c.train.weight_decay, 0.0),
    Setting("gradient clipping", lambda c: c.train.max_grad_norm, 1.0),
    Setting("schedule", lambda c: f"{c.train.lr_schedule}, {c.train.warmup_ratio:g} warm-up", "constant, 0.03 warm-up"),
    Setting("epochs", lambda c: c.train.epochs, {"llama-prm12k": 2, "qwen-math-omi2": 1, "qwen-math-uhard": 1,
                                                 "r1distill-limo": 3}),
    Setting("max length", lambda c: c.train.max_length, _per_model(3072, 3072, 16384),
            "the paper's text gives 4096 (the official script 3072): a longer limit only keeps more of the rare "
            "long full solutions"),
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
    Setting("grading", lambda c: "last boxed / stated answer, math-verify or text", "boxed rule, or the Omni-Judge LLM",
            "no judge model is assumed; rule-based grading only"),
]


def job_config(run: str, sft: bool = False) -> PipelineConfig:
    """Return the loaded job config of ``run`` (its -sft baseline with ``sft``)."""
    return load_config(ROOT / "jobs" / "configs" / f"{run}{'-sft' if sft else ''}.yaml")


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def sft_differences(run: str) -> set[str]:
    """Return the dotted settings in which ``run``'s -sft baseline differs from the run itself."""
    upft, sft = _flat(config_to_dict(job_config(run))), _flat(config_to_dict(job_config(run, sft=True)))
    return {k for k in upft if upft[k] != sft[k]}


def _show(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "`" + text.replace("|", "\\|") + "`"


def fidelity_table() -> str:
    """Return the markdown table (with the lines around it) for the README.

    Raises ValueError when a setting differs from the official value without a reason, or an -sft
    baseline changes more than its method, run directory and base evaluation."""
    configs = {run: job_config(run) for run in RUNS}
    lines = ["| setting | " + " | ".join(f"`{r}`" for r in RUNS) + " | where we differ, and why |",
             "|---|" + "---|" * len(RUNS) + "---|"]
    for s in SETTINGS:
        cells, differs = [], False
        for run in RUNS:
            ours, official = s.ours(configs[run]), s.official_for(run)
            same = ours == official
            differs |= not same
            cells.append(f"{_show(ours)} ✓" if same else f"{_show(ours)} ≠ {_show(official)}")
        if differs and not s.why:
            raise ValueError(f"{s.label}: differs from the official recipe ({cells}) and no reason is given")
        lines.append(f"| {s.label} | " + " | ".join(cells) + f" | {s.why if differs else ''} |")
    for run in RUNS:
        if extra := sft_differences(run) - SFT_MAY_CHANGE:
            raise ValueError(f"jobs/configs/{run}-sft.yaml: changes {sorted(extra)} besides {sorted(SFT_MAY_CHANGE)}")
    return "\n".join([BEGIN, "", "`ours ✓`: the same as the official recipe; `ours ≠ official` otherwise. Each "
                      "`-sft.yaml` baseline is its run with `sample.method: sft` (own `run_dir`, no second base "
                      "evaluation) and otherwise the same settings (checked).", "", *lines, "", END])


def readme_with_table(readme: str) -> str:
    """Return ``readme`` with the text between the markers replaced by the current table.

    Raises ValueError when the README lacks the markers, or holds them twice or out of order."""
    return readme.replace(find_block(readme, BEGIN, END, "README.md"), fidelity_table())


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = readme_with_table(text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md's paper-fidelity table is stale: run python cluster/fidelity.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
