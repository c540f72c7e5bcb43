"""Typed configs, one per stage, composed into a PipelineConfig; loaded from YAML, overridable.

Every field carries a description (``field(metadata={"help": ...})``). Loading checks unknown keys,
types and value ranges, and reports every problem in one ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from upft_ray.config_checks import cross_field_problems
from upft_ray.questions import COLUMN_PRESETS, Columns, preset_columns
from upft_ray.templates import UPFT_TASK_TEMPLATE
from upft_ray.typed_config import (ConfigError, apply_overrides, build_config, config_field as _f,  # noqa: F401
                                   config_to_dict, read_config_data)

# A sampling field set to this takes the model's generation_config value (resolved when sampling starts).
MODEL_DEFAULT = "model"


@dataclass
class EngineConfig:
    """vLLM engine options, shared by sampling and evaluation."""

    dtype: str = _f("auto", "weights/activations dtype for vLLM; auto: the checkpoint's on GPUs, on CPUs bfloat16 "
                    "only with AVX-512 BF16/AMX, else float32", choices=("bfloat16", "float16", "float32", "auto"))
    max_model_len: int = _f(2048, "context length the engine reserves KV cache for", min=16)
    enforce_eager: bool = _f(True, "skip CUDA-graph/compile warm-up (faster start; CPU always eager)")
    tensor_parallel_size: int = _f(1, "GPUs per vLLM replica (tensor parallel)", min=1)
    gpu_memory_utilization: float = _f(0.9, "share of GPU memory vLLM may take", min=0.05, max=1.0)
    cpu_kv_cache_gib: int = _f(2, "KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE, GiB)", min=1)
    num_replicas: int | str = _f(1, "vLLM actors (each one engine); auto: as many as the Ray cluster's GPUs hold "
                                 "(GPUs // gpus_per_replica), decided when the stage starts", min=1, allow_auto=True)
    cpus_per_replica: float = _f(1.0, "CPUs reserved per vLLM actor", min=0.0)
    gpus_per_replica: float = _f(0.0, "GPUs per vLLM actor (0 on CPU; = tensor_parallel_size on GPU)", min=0.0)
    max_batches_in_flight: int = _f(4, "batches each vLLM actor works on at once; their requests share one "
                                    "engine, so one batch's long answers do not leave the engine half idle", min=1)
    batch_size: int = _f(64, "rows per map_batches call into the engine when evaluating (sampling sends one "
                         "chunk of sample.rows_per_shard questions per call)", min=1)


@dataclass
class SampleConfig:
    """Prefix sampling: which questions, how long a prefix, how many full solutions."""

    questions: str = _f("bundled:arith-train", "question set: bundled:NAME, a .jsonl/.parquet file, a directory "
                        "of them, a glob, an HF save_to_disk directory, or an s3:// / gs:// URI")
    columns: str = _f("generic", "column preset: generic (question/answer/id), omi2 (problem/expected_answer, id "
                      "derived), uhard (problem/answer/id)", choices=tuple(COLUMN_PRESETS))
    question_field: str = _f("", "column holding the question text ('' = from the preset)")
    answer_field: str = _f("", "column holding the gold answer, kept for analysis ('' = from the preset)")
    id_field: str = _f("", "column holding a question id ('' = from the preset; ids are derived from the "
                       "question text when the column is absent)")
    max_questions: int = _f(0, "use only the first N questions (0 = all)", min=0)
    prefix_tokens: int | str = _f(8, "t: generated tokens kept on prefix rows (paper: 8/32/128); 'auto' picks t "
                                  "from a prefix self-consistency measurement (analyze section, README)",
                                  min=1, allow_auto=True)
    structure_ratio: float = _f(0.1, "p: share of rows that keep the full solution", min=0.0, max=1.0)
    max_new_tokens: int = _f(512, "generation limit for full (structure-tuning) rows", min=1)
    num_samples: int = _f(1, "samples per question (sample_index 0..n-1; RFT and consistency analysis use n > 1)",
                          min=1)
    rows_per_shard: int = _f(1024, "questions per chunk; each chunk is one shard, the unit of resume", min=1)
    temperature: float | str = _f(MODEL_DEFAULT, "sampling temperature; 'model': the model's generation_config "
                                  "(1.0 where it sets none); the paper's runs use 0.6", min=0.0, words=(MODEL_DEFAULT,))
    top_p: float | str = _f(MODEL_DEFAULT, "nucleus sampling; 'model': the model's generation_config (1.0 where "
                            "it sets none), as the official sampler", min=0.0, max=1.0, words=(MODEL_DEFAULT,))
    top_k: int | str = _f(MODEL_DEFAULT, "top-k sampling, 0 or -1 = off; 'model': the model's generation_config "
                          "(50 where it sets none, as the official sampler)", min=-1, words=(MODEL_DEFAULT,))
    system_prompt: str = _f("", "system message before the question ('' = the model's default)")
    task_template: str = _f(UPFT_TASK_TEMPLATE, "suffix given to prefix rows' training prompt (the paper's "
                            "App. A.1 text); '' trains prefix rows on the bare question (the template ablation: "
                            "sample.task_template='')")
    method: str = _f("upft", "upft: prefixes + the structure_ratio share of full solutions; sft: one unfiltered "
                     "full solution per question; rft: num_samples full solutions per question, only those the "
                     "grader finds correct are trained on; label_filter: UPFT's mix, but decoded whole and kept "
                     "only when correct (prefix rows then train on their first prefix_tokens tokens)",
                     choices=("upft", "sft", "rft", "label_filter"))
    engine: EngineConfig = _f(EngineConfig(), "vLLM engine")

    def columns_spec(self) -> Columns:
        """Return the question/answer/id columns: the preset, with any field set here in its place."""
        return preset_columns(self.columns, self.question_field, self.answer_field, self.id_field)


@dataclass
class TrainConfig:
    """Prefix SFT with Ray Train + DeepSpeed."""

    num_workers: int | str = _f(2, "Ray Train workers (data-parallel ranks); auto (GPU training): one per GPU of "
                                "the Ray cluster, decided when the stage starts", min=1, allow_auto=True)
    cpus_per_worker: float = _f(1.0, "CPUs per worker", min=0.0)
    use_gpu: bool = _f(False, "one GPU per worker (NCCL) instead of CPU (gloo)")
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage", choices=(0, 1, 2, 3))
    precision: str = _f("fp32", "training precision (bf16 keeps fp32 master weights in DeepSpeed); auto: bf16 where "
                        "the hardware has fast bf16 matmuls (GPUs from Ampere on, CPUs with AVX-512 BF16/AMX), "
                        "else fp32", choices=("fp32", "bf16", "auto"))
    learning_rate: float = _f(1e-5, "AdamW peak learning rate", min=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0)
    adam_beta1: float = _f(0.9, "AdamW beta1", min=0.0, max=1.0)
    adam_beta2: float = _f(0.999, "AdamW beta2 (torch's default; the official UPFT code uses 0.95)", min=0.0, max=1.0)
    lr_schedule: str = _f("constant", "after warm-up: constant (paper) or cosine decay to min_lr_ratio x lr",
                          choices=("constant", "cosine"))
    warmup_ratio: float = _f(0.03, "share of steps with linear warm-up (paper: 0.03)", min=0.0, max=1.0)
    min_lr_ratio: float = _f(0.0, "cosine schedule: final lr as a share of the peak", min=0.0, max=1.0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm", min=0.0)
    epochs: int = _f(1, "passes over the training rows", min=1)
    micro_batch_size: int = _f(4, "rows per worker per forward pass (a packed row holds several examples)", min=1)
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step", min=1)
    max_length: int = _f(1024, "tokens per example (longer ones are cut) and per packed row", min=8)
    packing: bool = _f(True, "pack short examples into rows of max_length tokens (no cross-example attention)")
    prefix_eos: str = _f("loss", "what a prefix row ends with: loss (the paper: EOS appended, with loss: the model "
                         "learns to stop after t tokens), no_loss (EOS appended, masked from the loss: the same "
                         "gradient as none), none (no EOS: the prefix as the start of an answer). The task template "
                         "is sample.task_template ('' = none)", choices=("loss", "no_loss", "none"))
    loss_normalization: str = _f("example", "example: mean over the global batch of each example's mean token NLL "
                                 "(the official UPFT code: micro-batch 1, per-sequence mean, accumulated); token: "
                                 "NLL summed over the global batch / its loss tokens (long full solutions then "
                                 "outweigh the prefixes)", choices=("token", "example"))
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    offload_optimizer: bool = _f(False, "ZeRO-Offload: optimizer state and step on the CPU (GPU training only)")
    checkpoint_every_steps: int = _f(0, "report a checkpoint every N optimizer steps (0 = at the end)", min=0)
    keep_last_k: int = _f(2, "checkpoints kept", min=1)
    max_failures: int = _f(1, "worker failures tolerated (restart from last checkpoint)", min=0)
    tensorboard: bool = _f(False, "also write metrics to RUN/train/tensorboard")
    log_every_steps: int = _f(1, "print/write metrics every N steps", min=1)
    export_dtype: str = _f("auto", "dtype of the HF export in RUN/train/final; auto: bfloat16 when training used GPUs "
                           "(vLLM serves bf16 there and the export is half the size), else float32 (on CPU vLLM and "
                           "our evaluation run the checkpoint's dtype, and small fine-tuning updates would round "
                           "away in bf16)", choices=("auto", "float32", "bfloat16"))


@dataclass
class EvalConfig:
    """Greedy evaluation with Ray Data + vLLM."""

    benchmarks: list = _f(["bundled:arith-eval"], "gsm8k, math500, aime2024, gpqa (multiple choice), gpqa_free "
                          "(the paper's free-form GPQA) (NAME or NAME:PATH), "
                          "bundled:SET, or .jsonl/.parquet paths")
    max_questions: int = _f(0, "use only the first N questions per benchmark (0 = all)", min=0)
    max_new_tokens: int = _f(512, "generation limit per answer", min=1)
    decoding: str = _f("greedy", "greedy (paper) or sample (pass@k / maj@k over num_samples)",
                       choices=("greedy", "sample"))
    num_samples: int = _f(1, "k: samples per question when decoding is sample", min=1)
    temperature: float = _f(0.6, "sampling temperature when decoding is sample", min=0.0)
    top_p: float = _f(0.95, "nucleus sampling when decoding is sample", min=0.0, max=1.0)
    evaluate_base: bool = _f(True, "in `upft run`, also evaluate the base model for comparison")
    columns: str = _f("generic", "column preset of generic evaluation sets (bundled:SET, plain .jsonl/.parquet "
                      "paths; registered benchmarks keep their own mapping): generic (question/answer/id), omi2, "
                      "uhard", choices=tuple(COLUMN_PRESETS))
    question_field: str = _f("", "generic evaluation sets: column holding the question ('' = from the preset)")
    answer_field: str = _f("", "generic evaluation sets: column holding the gold answer ('' = from the preset); "
                           "rows without a usable gold are rejected, a file where none has one is an error")
    id_field: str = _f("", "generic evaluation sets: column holding a question id ('' = from the preset; derived "
                       "from the question text when absent)")
    engine: EngineConfig = _f(EngineConfig(), "vLLM engine")

    def columns_spec(self) -> Columns:
        """Return the columns of generic evaluation sets: the preset, with any field set here in its place."""
        return preset_columns(self.columns, self.question_field, self.answer_field, self.id_field)


@dataclass
class AnalyzeConfig:
    """Prefix self-consistency and error-localisation measurements (``upft analyze``, ``prefix_tokens: auto``)."""

    num_samples: int = _f(16, "n: full solutions sampled per question (temperature and engine from sample)", min=2)
    max_questions: int = _f(64, "questions of sample.questions measured (0 = all)", min=0)
    prefix_lengths: list = _f([1, 2, 4, 8, 16, 32, 64, 128], "prefix lengths t at which agreement is measured")
    max_new_tokens: int = _f(256, "generation limit of the measured solutions (they are graded when gold exists)",
                             min=1)
    auto_min_agreement: float = _f(0.5, "prefix_tokens auto: the longest t whose mean modal-prefix share is at "
                                   "least this", min=0.0, max=1.0)
    rollout_questions: int = _f(16, "analyze rollouts: questions whose first sampled solutions are rolled out",
                                min=1)
    rollout_positions: list = _f([0.0, 0.25, 0.5, 0.75], "analyze rollouts: cut points, as shares of each "
                                 "solution's length, from which completions are rolled out")
    rollouts_per_position: int = _f(8, "analyze rollouts: m completions per cut point", min=1)


@dataclass
class SweepConfig:
    """Several runs from one config (``upft sweep``): variants x seeds, reported in one table."""

    seeds: list = _f([], "seeds each variant runs with ([] = the config's seed only)")
    variants: list = _f([], "runs, each {name: NAME, overrides: [key=value, ...]} on top of this config "
                        "(e.g. sample.method=sft, sample.prefix_tokens=16)")


@dataclass
class RayConfig:
    """Where Ray runs."""

    address: str = _f("local", "'local' starts a private Ray; 'auto' or ray://... joins a cluster")
    num_cpus: int = _f(0, "logical CPUs for a local Ray (0 = the machine's count)", min=0)


@dataclass
class PipelineConfig:
    """The whole UPFT run: sample -> train -> evaluate, under one run directory."""

    run_dir: str = _f("runs/quickstart", "directory holding sample/, train/, eval/ and report.md")
    model: str = _f("smollm2-135m-instruct", "bundled model name, local checkpoint path, or hub id")
    seed: int = _f(42, "seed for the prefix/full draw, vLLM sampling and training")
    ray: RayConfig = _f(RayConfig(), "Ray connection")
    sample: SampleConfig = _f(SampleConfig(), "prefix sampling stage")
    train: TrainConfig = _f(TrainConfig(), "training stage")
    eval: EvalConfig = _f(EvalConfig(), "evaluation stage")
    analyze: AnalyzeConfig = _f(AnalyzeConfig(), "prefix self-consistency / rollout analyses")
    sweep: SweepConfig = _f(SweepConfig(), "variants x seeds for upft sweep (ablations, baselines, reproduction)")

    @property
    def run_path(self) -> Path:
        """The run directory as an absolute path."""
        return Path(self.run_dir).expanduser().resolve()


def config_from_dict(data: dict, source: str = "config") -> PipelineConfig:
    """Build and validate a PipelineConfig; raises ConfigError listing every problem."""
    from upft_ray.models import model_problem
    from upft_ray.placement import auto_problems

    problems: list[str] = []
    cfg = build_config(PipelineConfig, data, "", problems)
    try:
        if isinstance(cfg.model, str) and "\x00" not in cfg.model and (why := model_problem(cfg.model)):
            problems.append(f"model: {why}")
    except (OSError, ValueError, RuntimeError) as err:  # a name too long for a path, a ~user that does not exist
        problems.append(f"model: {cfg.model[:200]!r} cannot be looked up ({err})")
    if cfg.eval.decoding == "greedy" and cfg.eval.num_samples != 1:
        problems.append("eval.num_samples: greedy decoding gives one answer per question; set "
                        "eval.decoding=sample for pass@k / maj@k")
    if cfg.train.offload_optimizer and not cfg.train.use_gpu:
        problems.append("train.offload_optimizer: moves optimizer state from GPU to CPU memory; training on CPU "
                        "has nothing to offload (set train.use_gpu: true on GPU workers)")
    if cfg.train.offload_optimizer and cfg.train.zero_stage == 0:
        problems.append("train.offload_optimizer: needs ZeRO stage 1, 2 or 3")
    problems += _analyze_problems(cfg.analyze) + _sweep_problems(cfg.sweep) + auto_problems(cfg)
    problems += cross_field_problems(cfg)
    if not cfg.eval.benchmarks:
        problems.append("eval.benchmarks: at least one benchmark is needed")
    elif not all(isinstance(b, str) for b in cfg.eval.benchmarks):
        problems.append("eval.benchmarks: expected a list of strings")
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _analyze_problems(a: AnalyzeConfig) -> list[str]:
    problems = []
    if not a.prefix_lengths or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1
                                       for t in a.prefix_lengths):
        problems.append(f"analyze.prefix_lengths: expected a non-empty list of positive integers, got {a.prefix_lengths!r}")
    if not a.rollout_positions or not all(isinstance(x, (int, float)) and 0 <= x < 1 for x in a.rollout_positions):
        problems.append(f"analyze.rollout_positions: expected shares in [0, 1), got {a.rollout_positions!r}")
    return problems


def _sweep_problems(s: SweepConfig) -> list[str]:
    problems = []
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in s.seeds):
        problems.append(f"sweep.seeds: expected a list of integers, got {s.seeds!r}")
    names = []
    for i, v in enumerate(s.variants):
        if not (isinstance(v, dict) and set(v) <= {"name", "overrides"} and isinstance(v.get("name"), str)
                and re.fullmatch(r"[A-Za-z0-9_.-]+", v["name"]) and isinstance(v.get("overrides", []), list)
                and all(isinstance(o, str) and "=" in o for o in v.get("overrides", []))):
            problems.append(f"sweep.variants[{i}]: expected {{name: NAME (letters, digits, _ . -), overrides: "
                            f"[key=value, ...]}}, got {v!r}")
            continue
        names.append(v["name"])
    if len(names) != len(set(names)):
        problems.append(f"sweep.variants: names must be unique, got {names}")
    return problems


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a PipelineConfig from YAML (or the defaults when ``path`` is None) plus overrides.

    Raises FileNotFoundError naming a missing file, ConfigError listing every bad field."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        data = read_config_data(Path(path))
        source = str(path)
    return config_from_dict(apply_overrides(data, overrides or []), source)


# Engine settings that only place work on hardware; a run resumed on other machines may change them.
_RESOURCE_FIELDS = ("num_replicas", "cpus_per_replica", "gpus_per_replica", "gpu_memory_utilization",
                    "cpu_kv_cache_gib", "batch_size", "enforce_eager", "tensor_parallel_size",
                    "max_batches_in_flight")


def sample_config_hash(cfg: PipelineConfig) -> str:
    """Return the hash that identifies a sampling run: model, seed and what shapes the samples.

    The sampler hashes its config after ``resolve_sampling``: sampling fields saying ``model`` count
    by the values the model gave them, so the same numbers written out explicitly hash the same."""
    from upft_ray.schema import config_hash

    sample = config_to_dict(cfg.sample)
    sample["engine"] = {k: v for k, v in sample["engine"].items() if k not in _RESOURCE_FIELDS}
    return config_hash({"model": cfg.model, "seed": cfg.seed, **sample})


def field_docs(cls: type = PipelineConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (dotted name, default, help) for every field, for docs and ``--help`` text."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_docs(tp, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows

