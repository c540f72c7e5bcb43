"""The pipeline's configs as pydantic models, one per stage, composed into a PipelineConfig.

Every field is typed, ranged and described. Values are checked strictly: an int field takes no
bool, float or text; a float takes no bool and no NaN or infinity; a text field holds no NUL.
Fields that take a number or a word (``auto``, ``model``) say so in their type. The rules that tie
fields together live in ``upft_ray.config.rules`` and run as each model's after-validator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from typing_extensions import NotRequired, TypedDict

from upft_ray.config import rules as checks
from upft_ray.config.columns import COLUMN_PRESETS, Columns, preset_columns
from upft_ray.config.types import (
    CHAT_TEMPLATES,
    MODEL_CHAT_TEMPLATE,
    UPFT_TASK_TEMPLATE,
    Float,
    OverrideText,
    RunName,
    Seed,
    TaskTemplate,
    Text,
    number_or,
    ranged,
)

# A sampling field set to this takes the model's generation_config value (resolved when sampling starts).
MODEL_DEFAULT = "model"
# No token for this long on any request means a hung engine (bench/RESULTS.md, "Engine stall timeout").
STALL_TIMEOUT_S = 120.0
# The official evaluation's judge context (1KE-JI/UPFT inference/eval.py: max_model_len=16 * 1024).
JUDGE_MAX_MODEL_LEN = 16384


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: object) -> object:
        return {} if data is None else data  # a YAML section whose settings are all commented out


class EngineConfig(_Config):
    """vLLM engine options, shared by sampling and evaluation."""
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field(
        "auto", description="weights/activations dtype for vLLM; auto: the checkpoint's on GPUs, on CPUs bfloat16 "
        "only with AVX-512 BF16/AMX, else float32")
    max_model_len: int = Field(2048, ge=16, description="context length the engine reserves KV cache for")
    enforce_eager: bool = Field(True, description="skip CUDA-graph/compile warm-up (faster start; CPU always eager)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM replica (tensor parallel)")
    gpu_memory_utilization: Float = Field(0.9, ge=0.05, le=1.0, description="share of GPU memory vLLM may take")
    cpu_kv_cache_gib: int = Field(2, ge=1, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE, GiB)")
    num_replicas: number_or(int, "auto", ge=1) = Field(
        1, description="vLLM actors (each one engine); auto: as many as the Ray cluster's GPUs hold "
        "(GPUs // gpus_per_replica), decided when the stage starts")
    cpus_per_replica: Float = Field(1.0, ge=0.0, description="CPUs reserved per vLLM actor")
    gpus_per_replica: Float = Field(0.0, ge=0.0, description="GPUs per vLLM actor (0 on CPU; = tensor_parallel_size "
                                    "on GPU)")
    max_batches_in_flight: int = Field(4, ge=1, description="batches each vLLM actor works on at once; their "
                                       "requests share one engine, so one batch's long answers do not leave the "
                                       "engine half idle")
    batch_size: int = Field(64, ge=1, description="generations per evaluation chunk (one engine call, the unit an "
                            "evaluation commits and resumes by) and per call of the analyses (sampling sends one "
                            "chunk of sample.rows_per_shard questions per call)")
    stall_timeout_s: Float = Field(
        STALL_TIMEOUT_S, gt=0.0, description="an engine that produces no token on any of its requests for this long "
        "is hung: its actor exits and its chunks are redone elsewhere (README, 'Faults')")
    speculative_tail: bool = Field(True, description="once every chunk has started, re-issue chunks still running "
                                   "to idle engines; the first commit wins (stragglers at 99%)")
    lost_work_timeout_s: Float = Field(
        600.0, gt=0.0, description="chunks left unfinished with no engine working on any chunk for this long (their "
        "engine was lost and Ray has not restarted it: no room left for it) are run again on a fresh engine pool "
        "(README, 'Faults')")
    backend: Text = Field(
        "vllm", pattern=r"^(vllm|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$", json_schema_extra={"hashed": "when_set"},
        description="generation engine of each actor: vllm, or "
        "module:Class for another engine with the same interface (README, 'Engine backends')")

    chat_template: Literal[CHAT_TEMPLATES] = Field(
        MODEL_CHAT_TEMPLATE, json_schema_extra={"hashed": "when_set"},
        description="how prompts are rendered: model (the tokenizer's own chat template) or one of the official "
        "UPFT code's templates (llama-3.1-upft: no date lines in the system block; qwen-math-upft; "
        "deepseek-r1-upft: no opening <think> after the assistant tag); training renders with sample.engine's")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> EngineConfig:
        return checks.enforce(self, info, checks.engine_rules)


class SampleConfig(_Config):
    """Prefix sampling: which questions, how long a prefix, how many full solutions."""
    questions: Text = Field("bundled:arith-train", description="question set: bundled:NAME, a .jsonl/.parquet file, "
                            "a directory of them, a glob, an HF save_to_disk directory, or an s3:// / gs:// URI")
    columns: Literal[tuple(COLUMN_PRESETS)] = Field(
        "generic", description="column preset: generic (question/answer/id), omi2 (problem/expected_answer, id "
        "derived), uhard (problem/answer/id)")
    question_field: Text = Field("", description="column holding the question text ('' = from the preset)")
    answer_field: Text = Field("", description="column holding the gold answer, kept for analysis ('' = from the "
                               "preset)")
    id_field: Text = Field("", description="column holding a question id ('' = from the preset; ids are derived "
                           "from the question text when the column is absent)")
    max_questions: int = Field(0, ge=0, description="use only the first N questions (0 = all)")
    prefix_tokens: number_or(int, "auto", ge=1) = Field(
        8, description="t: generated tokens kept on prefix rows (paper: 8/32/128); 'auto' picks t from a prefix "
        "self-consistency measurement (analyze section, README)")
    structure_ratio: Float = Field(0.1, ge=0.0, le=1.0, description="p: share of rows that keep the full solution")
    max_new_tokens: int = Field(512, ge=1, description="generation limit for full (structure-tuning) rows")
    num_samples: int = Field(1, ge=1, description="samples per question (sample_index 0..n-1; RFT and consistency "
                             "analysis use n > 1)")
    rows_per_shard: int = Field(1024, ge=1, description="questions per chunk; each chunk is one shard, the unit of "
                                "resume")
    temperature: number_or(float, MODEL_DEFAULT, ge=0.0) = Field(
        MODEL_DEFAULT, description="sampling temperature; 'model': the model's generation_config (1.0 where it sets "
        "none); the paper's runs use 0.6")
    top_p: number_or(float, MODEL_DEFAULT, ge=0.0, le=1.0) = Field(
        MODEL_DEFAULT, description="nucleus sampling; 'model': the model's generation_config (1.0 where it sets "
        "none), as the official sampler")
    top_k: number_or(int, MODEL_DEFAULT, ge=-1) = Field(
        MODEL_DEFAULT, description="top-k sampling, 0 or -1 = off; 'model': the model's generation_config (50 where "
        "it sets none, as the official sampler)")
    system_prompt: Text = Field("", description="system message before the question ('' = the model's default)")
    task_template: TaskTemplate = Field(UPFT_TASK_TEMPLATE, description="suffix given to prefix rows' training prompt "
                                        "(the paper's App. A.1 text; 'paper' names it); '' trains prefix rows on the "
                                        "bare question (the template ablation: sample.task_template='')")
    method: Literal["upft", "sft", "rft", "label_filter"] = Field(
        "upft", description="upft: prefixes + the structure_ratio share of full solutions; sft: one unfiltered full "
        "solution per question; rft: num_samples full solutions per question, only those the grader finds correct "
        "are trained on; label_filter: UPFT's mix, but decoded whole and kept only when correct (prefix rows then "
        "train on their first prefix_tokens tokens)")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> SampleConfig:
        return checks.enforce(self, info, checks.sample_rules)

    def columns_spec(self) -> Columns:
        """Return the question/answer/id columns: the preset, with any field set here in its place."""
        return preset_columns(self.columns, self.question_field, self.answer_field, self.id_field)


class TrainConfig(_Config):
    """Prefix SFT with Ray Train + DeepSpeed."""
    num_workers: number_or(int, "auto", ge=1) = Field(
        2, description="Ray Train workers (data-parallel ranks); auto (GPU training): one per GPU of the Ray "
        "cluster, decided when the stage starts")
    cpus_per_worker: Float = Field(1.0, ge=0.0, description="CPUs per worker")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL) instead of CPU (gloo)")
    zero_stage: number_or(int, "auto", ge=0, le=3) = Field(
        2, description="DeepSpeed ZeRO stage 0-3; auto: chosen for the number of ranks when training starts, 1 on "
        "one rank (nothing to shard: stage 3 ran 2.2-2.6x slower on one H100), 2 on several, 3 on several GPUs "
        "where stage 2's weights, gradients and optimizer state would fill more than 60% of a GPU")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="training precision (bf16 keeps fp32 master weights in DeepSpeed); auto: bf16 where the "
        "hardware has fast bf16 matmuls (GPUs from Ampere on, CPUs with AVX-512 BF16/AMX), else fp32")
    learning_rate: Float = Field(1e-5, ge=0.0, description="AdamW peak learning rate")
    weight_decay: Float = Field(0.0, ge=0.0, description="AdamW weight decay")
    adam_beta1: Float = Field(0.9, ge=0.0, le=1.0, description="AdamW beta1")
    adam_beta2: Float = Field(0.999, ge=0.0, le=1.0, description="AdamW beta2 (torch's default; the official UPFT "
                              "code uses 0.95)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warm-up: constant (paper) or cosine decay to min_lr_ratio x lr")
    warmup_ratio: Float = Field(0.03, ge=0.0, le=1.0, description="share of steps with linear warm-up (paper: 0.03)")
    min_lr_ratio: Float = Field(0.0, ge=0.0, le=1.0, description="cosine schedule: final lr as a share of the peak")
    max_grad_norm: Float = Field(1.0, ge=0.0, description="gradient clipping norm")
    epochs: int = Field(1, ge=1, description="passes over the training rows")
    epoch_tail: Literal["drop", "carry"] = Field(
        "drop", json_schema_extra={"hashed": "when_set"},
        description="the rows at an epoch's end that fill no whole optimizer step: drop (each epoch trains "
        "floor(rows / global batch) steps) or carry (the official trainer's continuous stream: they open the next "
        "epoch's first step; only the last epoch's leftover, under one global batch, is never trained)")
    micro_batch_size: int = Field(4, ge=1, description="rows per worker per forward pass (a packed row holds several "
                                  "examples)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(1024, ge=8, description="tokens per example (longer ones are cut) and per packed row")
    packing: bool = Field(True, description="pack short examples into rows of max_length tokens (no cross-example "
                          "attention)")
    pad_to_multiple_of: int = Field(
        64, ge=1, json_schema_extra={"hashed": "when_set"},
        description="a micro-batch's width and its count of loss positions are padded up to a multiple of this "
        "(padding is masked: the same loss and gradients), so a run sees a few dozen shapes, not one per length: on "
        "CPUs every new shape leaves oneDNN/MKL kernels and buffers in the process, and a run's memory grew for as "
        "long as new shapes came (bench/shape_memory.py); 1 = the longest row and the exact count")
    prefix_eos: Literal["loss", "no_loss", "none"] = Field(
        "loss", description="what a prefix row ends with: loss (the paper: EOS appended, with loss: the model learns "
        "to stop after t tokens), no_loss (EOS appended, masked from the loss: the same gradient as none), none (no "
        "EOS: the prefix as the start of an answer). The task template is sample.task_template ('' = none)")
    loss_normalization: Literal["token", "example"] = Field(
        "example", description="example: mean over the global batch of each example's mean token NLL (the official "
        "UPFT code: micro-batch 1, per-sequence mean, accumulated); token: NLL summed over the global batch / its "
        "loss tokens (long full solutions then outweigh the prefixes)")
    gradient_checkpointing: bool | Literal["selective"] = Field(
        False, description="recompute activations in backward to save memory: true (each decoder layer whole), "
        "selective (the matmuls' and attention's outputs kept, the rest recomputed: most of the saving for a small "
        "part of the recompute), false")
    offload_optimizer: bool | Literal["auto"] = Field(
        False, description="ZeRO-Offload: optimizer state and step on the CPU (GPU training only); auto: only when "
        "weights, gradients and optimizer state would fill more than 60% of a GPU at the ZeRO stage "
        "(upft_ray/training/memory.py)")
    checkpoint_every_steps: int = Field(0, ge=0, description="report a checkpoint every N optimizer steps (0 = at "
                                        "the end)")
    keep_last_k: int = Field(2, ge=1, description="checkpoints kept")
    max_failures: int = Field(1, ge=0, description="worker failures tolerated (restart from last checkpoint)")
    tensorboard: bool = Field(False, description="also write metrics to RUN/train/tensorboard")
    log_every_steps: int = Field(1, ge=1, description="print/write metrics every N steps")
    export_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="dtype of the HF export in RUN/train/final; auto: bfloat16 when training used GPUs (vLLM "
        "serves bf16 there and the export is half the size), else float32 (on CPU vLLM and our evaluation run the "
        "checkpoint's dtype, and small fine-tuning updates would round away in bf16)")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> TrainConfig:
        return checks.enforce(self, info, checks.train_rules)


class JudgeEngineConfig(EngineConfig):
    """The judge's vLLM engine: an EngineConfig whose context is the official judge's by default."""
    max_model_len: int = Field(JUDGE_MAX_MODEL_LEN, ge=16, description="context length the judge engine reserves KV "
                               "cache for (a judge prompt holds the instructions, an example, the question and the "
                               f"whole answer; official {JUDGE_MAX_MODEL_LEN})")


class JudgeConfig(_Config):
    """An optional LLM judge beside the rule, as the official UPFT evaluation has (Omni-Judge): every graded
    answer is also judged, and reported right by the rule, by the judge, and by either."""
    model: Text = Field("", description="judge model: '' = no judge (rule-only grading, the default); else a bundled "
                        "model name, a local checkpoint path or a hub id, like `model` (official: KbsdJames/Omni-Judge)")
    max_new_tokens: int = Field(300, ge=1, description="generation limit of each judge report (greedy; official 300)")
    engine: JudgeEngineConfig = Field(default_factory=JudgeEngineConfig, description="vLLM engine of the judge's "
                                      "own engine pool, started once the answers are generated")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> JudgeConfig:
        return checks.enforce(self, info, checks.judge_rules)


class EvalConfig(_Config):
    """Greedy evaluation with Ray Data + vLLM."""
    benchmarks: list[Text] = Field(["bundled:arith-eval"], min_length=1, description="gsm8k, math500, aime2024, gpqa "
                                   "(multiple choice), gpqa_free (the paper's free-form GPQA) (NAME or NAME:PATH), "
                                   "bundled:SET, or .jsonl/.parquet paths")
    max_questions: int = Field(0, ge=0, description="use only the first N questions per benchmark (0 = all)")
    max_new_tokens: int = Field(512, ge=1, description="generation limit per answer")
    decoding: Literal["greedy", "sample"] = Field("greedy", description="greedy (paper) or sample (pass@k / maj@k "
                                                  "over num_samples)")
    num_samples: int = Field(1, ge=1, description="k: samples per question when decoding is sample")
    temperature: Float = Field(0.6, ge=0.0, description="sampling temperature when decoding is sample")
    top_p: Float = Field(0.95, ge=0.0, le=1.0, description="nucleus sampling when decoding is sample")
    evaluate_base: bool = Field(True, description="in `upft run`, also evaluate the base model for comparison")
    columns: Literal[tuple(COLUMN_PRESETS)] = Field(
        "generic", description="column preset of generic evaluation sets (bundled:SET, plain .jsonl/.parquet paths; "
        "registered benchmarks keep their own mapping): generic (question/answer/id), omi2, uhard")
    question_field: Text = Field("", description="generic evaluation sets: column holding the question ('' = from "
                                 "the preset)")
    answer_field: Text = Field("", description="generic evaluation sets: column holding the gold answer ('' = from "
                               "the preset); rows without a usable gold are rejected, a file where none has one is "
                               "an error")
    id_field: Text = Field("", description="generic evaluation sets: column holding a question id ('' = from the "
                           "preset; derived from the question text when absent)")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, json_schema_extra={"hashed": "when_set"},
                               description="optional LLM judge of every graded answer (off by default: judge.model '')")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> EvalConfig:
        return checks.enforce(self, info, checks.eval_rules)

    def columns_spec(self) -> Columns:
        """Return the columns of generic evaluation sets: the preset, with any field set here in its place."""
        return preset_columns(self.columns, self.question_field, self.answer_field, self.id_field)


class AnalyzeConfig(_Config):
    """Prefix self-consistency and error-localisation measurements (``upft analyze``, ``prefix_tokens: auto``)."""
    num_samples: int = Field(16, ge=2, description="n: full solutions sampled per question (temperature and engine "
                             "from sample)")
    max_questions: int = Field(64, ge=0, description="questions of sample.questions measured (0 = all)")
    prefix_lengths: list[ranged(int, ge=1)] = Field(
        [1, 2, 4, 8, 16, 32, 64, 128], min_length=1, description="prefix lengths t at which agreement is measured")
    max_new_tokens: int = Field(256, ge=1, description="generation limit of the measured solutions (they are graded "
                                "when gold exists)")
    auto_min_agreement: Float = Field(0.5, ge=0.0, le=1.0, description="prefix_tokens auto: the longest t whose mean "
                                      "modal-prefix share is at least this")
    rollout_questions: int = Field(16, ge=1, description="analyze rollouts: questions whose first sampled solutions "
                                   "are rolled out")
    rollout_positions: list[ranged(float, ge=0.0, lt=1.0)] = Field(
        [0.0, 0.25, 0.5, 0.75], min_length=1, description="analyze rollouts: cut points, as shares of each "
        "solution's length, from which completions are rolled out")
    rollouts_per_position: int = Field(8, ge=1, description="analyze rollouts: m completions per cut point")


class SweepVariant(TypedDict):
    """One run of a sweep: its name and the overrides laid on the sweep's config (a plain dict)."""
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]
    name: RunName
    overrides: NotRequired[list[OverrideText]]


class SweepConfig(_Config):
    """Several runs from one config (``upft sweep``): variants x seeds, reported in one table."""
    seeds: list[Seed] = Field([], description="seeds each variant runs with ([] = the config's seed only)")
    variants: list[SweepVariant] = Field([], description="runs, each {name: NAME, overrides: [key=value, ...]} on top "
                                         "of this config (e.g. sample.method=sft, sample.prefix_tokens=16)")
    keep_checkpoints: bool = Field(False, description="keep each finished run's training checkpoints (weights and "
                                   "optimizer states, ~16 bytes per parameter: 2.1 GB per run of the 135M model); by "
                                   "default a run's RUN/train/ray is deleted once it is evaluated (train/final stays)")
    records_dir: Text = Field("", description="directory keeping each finished run's records (manifests, metrics, "
                              "per-question results, its P(EOS) after t; no weights) so the sweep outlives its "
                              "machine: a run whose directory is missing is restored from there and counted done "
                              "('' = keep none; upft_ray.orchestration.sweep_records)")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> SweepConfig:
        return checks.enforce(self, info, checks.sweep_rules)


class RayConfig(_Config):
    """Where Ray runs."""
    address: Text = Field("local", description="'local' starts a private Ray; 'auto' or ray://... joins a cluster")
    num_cpus: int = Field(0, ge=0, description="logical CPUs for a local Ray (0 = the machine's count)")


class PipelineConfig(_Config):
    """The whole UPFT run: sample -> train -> evaluate, under one run directory."""
    run_dir: Text = Field("runs/quickstart", description="directory holding sample/, train/, eval/ and report.md")
    label: Text = Field("", description="what this run is (e.g. which ablation variant and why), printed at the top "
                        "of report.md; descriptive only: no results hash includes it")
    model: Text = Field("smollm2-135m-instruct", description="bundled model name, local checkpoint path, or hub id")
    seed: Seed = Field(42, description="seed for the prefix/full draw, vLLM sampling and training (0..2^32-1, the "
                       "range NumPy and vLLM seed with)")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="prefix sampling stage")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training stage")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation stage")
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig, description="prefix self-consistency / rollout "
                                   "analyses")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="variants x seeds for upft sweep (ablations, "
                               "baselines, reproduction)")

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> PipelineConfig:
        return checks.enforce(self, info, checks.pipeline_rules)

    @property
    def run_path(self) -> Path:
        """The run directory as an absolute path."""
        return Path(self.run_dir).expanduser().resolve()
