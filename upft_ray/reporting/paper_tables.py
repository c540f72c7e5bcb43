"""The paper's two result tables (arXiv 2503.02875, as ``../shared/UPFT.md`` lists them), each row tied to the
job config that reproduces it.

``docs/PAPER.md`` is generated from these rows and the configs (``scripts/paper_doc.py``); a test
fails when a row of either table has no config, or when a config does not say what its row says
(model, method, data, t, p)."""

from __future__ import annotations

from dataclasses import dataclass, field

BENCHMARKS = ("GSM8K", "MATH500", "AIME24", "GPQA")
MODELS = {"llama": "meta-llama/Llama-3.1-8B-Instruct", "qwen": "Qwen/Qwen2.5-Math-7B-Instruct",
          "r1": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
MODEL_LABELS = {"llama": "Llama-3.1-8B-Instruct", "qwen": "Qwen2.5-Math-7B-Instruct",
                "r1": "DeepSeek-R1-Distill-Qwen-7B"}
DATA_LABELS = {"prm12k": "PRM 12K", "omi2": "OMI2 600K", "limo": "LIMO 0.8K", "uhard": "U-Hard 100K"}


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: what it ran, its numbers, and our config for it ('' = not provided)."""
    table: str                      # "unsupervised" | "supervised"
    model: str                      # key of MODELS
    method: str                     # base | sft | upft | rft | label_filter | v_star
    data: str                       # key of DATA_LABELS ('' for a base row)
    scores: tuple[float, ...]       # GSM8K, MATH500, AIME24, GPQA, avg
    config: str                     # jobs/configs/NAME.yaml, '' when not provided
    tuned_length: float | None = None                 # unsupervised table: average tuned length
    tokens: tuple[str, str] | None = None             # supervised table: (sampled, tuned), as printed
    note: str = field(default="", compare=False)      # why no config, or how the row's data was inferred

    @property
    def label(self) -> str:
        """Return the row as the paper prints it (``+ UPFT`` under its model, the model name for a base row)."""
        names = {"base": MODEL_LABELS[self.model], "sft": "+ SFT", "upft": "+ UPFT", "rft": "+ RFT (K=16)",
                 "label_filter": "+ label filter", "v_star": "+ V-STaR"}
        return names[self.method]


def _u(model: str, method: str, data: str, length: float | None, scores: tuple, config: str) -> PaperRow:
    return PaperRow("unsupervised", model, method, data, scores, config, tuned_length=length)


def _s(model: str, method: str, tokens: tuple[str, str], scores: tuple, config: str, note: str = "") -> PaperRow:
    return PaperRow("supervised", model, method, "prm12k", scores, config, tokens=tokens, note=note)


# The supervised table does not name its data; its token counts do: RFT's tuned tokens are about its
# sampled tokens / 16, i.e. one ~190 (Llama) / ~270 (Qwen) / ~1,660 (R1) token solution per question of a
# 12K set, the SFT lengths measured on PRM 12K; and its Llama and Qwen UPFT rows are the PRM 12K rows.
_R1_PRM = ("the paper does not name this row's data; its tokens fit PRM 12K: 5.0M sampled = 12K x "
           "(0.9 x 128 + 0.1 x ~3,000) and RFT's 19.9M tuned = 12K x ~1,660")
UNSUPERVISED = [
    _u("llama", "base", "", None, (82.0, 51.0, 3.3, 8.6, 36.2), "llama-base"),
    _u("llama", "sft", "prm12k", 175.8, (83.8, 48.4, 3.3, 8.6, 36.0), "llama-prm12k-sft"),
    _u("llama", "upft", "prm12k", 15.8, (85.4, 52.0, 6.7, 9.1, 38.3), "llama-prm12k"),
    _u("qwen", "base", "", None, (95.2, 84.0, 16.7, 9.6, 51.4), "qwen-math-base"),
    _u("qwen", "sft", "prm12k", 300.1, (95.8, 83.4, 13.3, 9.1, 50.4), "qwen-math-prm12k-sft"),
    _u("qwen", "upft", "prm12k", 51.4, (95.5, 85.6, 20.0, 9.6, 52.6), "qwen-math-prm12k"),
    _u("qwen", "sft", "omi2", 533.2, (95.4, 83.4, 13.3, 6.6, 49.7), "qwen-math-omi2-sft"),
    _u("qwen", "upft", "omi2", 67.5, (95.4, 86.4, 20.0, 9.6, 52.9), "qwen-math-omi2"),
    _u("qwen", "sft", "limo", 491.8, (95.8, 84.2, 20.0, 7.6, 51.9), "qwen-math-limo-sft"),
    _u("qwen", "upft", "limo", 77.8, (95.6, 85.8, 20.0, 8.6, 52.5), "qwen-math-limo"),
    _u("qwen", "sft", "uhard", 393.3, (95.5, 83.4, 16.7, 9.6, 51.3), "qwen-math-uhard-sft"),
    _u("qwen", "upft", "uhard", 68.2, (96.0, 85.6, 26.6, 9.6, 54.5), "qwen-math-uhard"),
    _u("r1", "base", "", None, (88.6, 87.0, 40.0, 13.1, 57.2), "r1distill-base"),
    _u("r1", "sft", "limo", 2029.5, (89.7, 87.0, 40.0, 12.1, 57.2), "r1distill-limo-sft"),
    _u("r1", "upft", "limo", 757.7, (92.0, 89.4, 43.3, 17.7, 60.6), "r1distill-limo"),
    _u("r1", "sft", "uhard", 3440.4, (89.7, 87.0, 36.7, 12.1, 56.4), "r1distill-uhard-sft"),
    _u("r1", "upft", "uhard", 561.7, (91.4, 89.2, 50.0, 15.7, 61.6), "r1distill-uhard"),
]
SUPERVISED = [
    _s("llama", "rft", ("36.9M", "2.3M"), (86.0, 52.0, 6.7, 9.1, 38.5), "llama-prm12k-rft16"),
    _s("llama", "upft", ("0.2M", "0.2M"), (85.4, 52.0, 6.7, 9.1, 38.3), "llama-prm12k"),
    _s("qwen", "rft", ("51.7M", "3.2M"), (95.7, 85.2, 20.0, 9.6, 52.6), "qwen-math-prm12k-rft16"),
    _s("qwen", "v_star", ("51.7M", "9.6M"), (96.0, 85.4, 20.0, 10.1, 52.9), "",
       "not provided: V-STaR trains a verifier with DPO on correct/incorrect samples and picks the verifier's best "
       "of K; upft-ray has no preference (DPO) trainer or verifier-ranked selection"),
    _s("qwen", "upft", ("0.6M", "0.6M"), (95.5, 85.6, 20.0, 9.6, 52.6), "qwen-math-prm12k"),
    _s("qwen", "label_filter", ("51.7M", "0.6M"), (96.0, 85.6, 20.0, 10.1, 52.9), "qwen-math-prm12k-label-filter",
       "a declared difference: our label filter keeps every correct sample of the K = 16 (the paper's 51.7M sampled "
       "tokens are RFT's), while its 0.6M tuned tokens, UPFT's, suggest one kept prefix per question"),
    _s("r1", "rft", ("318.0M", "19.9M"), (90.7, 87.0, 40.0, 11.1, 57.2), "r1distill-prm12k-rft16", _R1_PRM),
    _s("r1", "upft", ("5.0M", "5.0M"), (91.9, 88.4, 40.0, 14.6, 58.7), "r1distill-prm12k", _R1_PRM),
]
ROWS = UNSUPERVISED + SUPERVISED


def paper_configs() -> list[str]:
    """Return the job config names the rows name, each once, in table order."""
    return list(dict.fromkeys(r.config for r in ROWS if r.config))
