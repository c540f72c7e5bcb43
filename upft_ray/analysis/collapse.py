"""Measure the collapse: do tuned models stop after about t tokens, and is it the EOS or the template?

``upft analyze collapse`` looks at every evaluated model in a run directory (``eval_base/`` and
``eval/`` of the run, or of each run of a sweep) and writes, under ``RUN/analysis/collapse/``:

- per model, the distribution of answer lengths (``num_output_tokens`` of its evaluation) and the
  share of answers that *end* (finish_reason "stop") within t + 2 tokens, t being the run's prefix
  length (its sample manifest; the config's for the base of a sweep);
- per model whose weights are at hand (the base, ``RUN/train/final``), or whose result was kept (a
  sweep's run measured before its weights went, ``measure_run_eos``; read, not measured again, while
  it is newer than the weights), the probability of EOS right
  after t response tokens, teacher-forced on the model's own first t answer tokens (its evaluation
  output, re-tokenised) with transformers on CPU, once under the prompt with the task template and
  once without. A model that learned "stop after t tokens" only behind the template shows a high
  P(EOS) with it and a low one without; the collapse is a high one without. The base is measured at
  the sweep's t and again at every other t a tuned run has (rows "eval_base @ t=32"), so each tuned
  row has a base row at its own t.

Files: ``collapse.parquet`` / ``collapse.json`` (one row per model), ``eos.parquet`` (per question),
``collapse.md`` and ``collapse.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from upft_ray.config.types import MODEL_CHAT_TEMPLATE, UPFT_TASK_TEMPLATE
from upft_ray.engine.prompts import chat_messages, render_prompt
from upft_ray.io.durable import write_parquet_durably
from upft_ray.io.manifests import write_json_atomic

log = logging.getLogger("upft.analyze")  # "[analyze] ..." lines: minutes per model at 0.5B
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
EOS_QUESTIONS = 100  # questions teacher-forced per model unless told otherwise (`upft analyze collapse`)


def find_evaluations(run_dir: Path) -> list[dict]:
    """Return every finished evaluation in ``run_dir`` and its sub-directories (a sweep's runs), as
    {name, run, eval_dir, kind ("base" or "tuned")}, in a stable order."""
    found = []
    for run in [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())]:
        for sub, kind in (("eval_base", "base"), ("eval", "tuned")):
            if (run / sub / "metrics.json").is_file():
                name = sub if run == run_dir else f"{run.name}/{sub}"
                found.append({"name": name, "run": run, "eval_dir": run / sub, "kind": kind})
    return found


def eval_rows(eval_dir: Path) -> pd.DataFrame:
    """Return the graded rows of an evaluation (every ``<benchmark>.parquet`` its metrics.json names)."""
    names = json.loads((eval_dir / "metrics.json").read_text())["benchmarks"]
    parts = [pd.read_parquet(eval_dir / f"{n}.parquet") for n in names if (eval_dir / f"{n}.parquet").is_file()]
    if not parts:
        raise ValueError(f"{eval_dir}: no per-question results (<benchmark>.parquet) to measure")
    return pd.concat(parts, ignore_index=True)


def run_prefix_tokens(run: Path, default: int | str) -> int | None:
    """Return the prefix length t of a run: its sample manifest's (``auto`` resolved), else ``default``
    when it is a number, else None."""
    manifest = run / "sample" / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return int(data["prefix_tokens"] if "prefix_tokens" in data else data["config"]["prefix_tokens"])
    return default if isinstance(default, int) else None


def length_summary(rows: pd.DataFrame, t: int | None) -> dict:
    """Return the answer-length distribution of ``rows`` and the share that end within t + 2 tokens."""
    lengths = rows["num_output_tokens"]
    out = {"answers": len(rows), "mean_tokens": float(lengths.mean())}
    out.update({f"p{int(100 * q)}_tokens": float(lengths.quantile(q)) for q in QUANTILES})
    out["share_cut_by_limit"] = float((rows["finish_reason"] == "length").mean())
    ended = (rows["finish_reason"] == "stop") & (lengths <= t + 2) if t is not None else None
    out["share_end_within_t_plus_2"] = float(ended.mean()) if ended is not None else None
    return out


def eos_probabilities(model_path: str, rows: pd.DataFrame, t: int, template: str, system_prompt: str = "",
                      batch_size: int = 8, chat_template: str = MODEL_CHAT_TEMPLATE) -> pd.DataFrame:
    """Return per question P(EOS | prompt, first t answer tokens), with and without ``template``, the prompt
    rendered with ``chat_template`` (the evaluation's ``engine.chat_template``).

    The first t tokens come from re-tokenising the model's own evaluation output (``output``); an
    answer shorter than t tokens has no such position and gets NaN (counted by the caller)."""
    import torch  # heavy: loaded when used
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: loaded when used

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    records = []
    for row in rows.itertuples():
        answer = tokenizer.encode(row.output, add_special_tokens=False)[:t]
        records.append({"benchmark": row.benchmark, "question_id": row.question_id, "answer_ids": answer})
    out = pd.DataFrame(records)[["benchmark", "question_id"]]
    for column, suffix in (("p_eos_with_template", template), ("p_eos_without_template", "")):
        seqs = [render_prompt(tokenizer, chat_messages(q, system_prompt, suffix), chat_template)[1] + r["answer_ids"]
                if len(r["answer_ids"]) == t else None for q, r in zip(rows["question"], records)]
        probs = [float("nan")] * len(seqs)
        todo = [i for i, s in enumerate(seqs) if s is not None]
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            width = max(len(seqs[i]) for i in batch)
            ids = torch.full((len(batch), width), eos, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):  # right padding: the last real token's logits are read
                ids[b, :len(seqs[i])] = torch.tensor(seqs[i])
                mask[b, :len(seqs[i])] = 1
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits
            for b, i in enumerate(batch):
                probs[i] = float(torch.softmax(logits[b, len(seqs[i]) - 1].float(), -1)[eos])
        out[column] = probs
    return out


def _model_path(entry: dict, base_model: str) -> str | None:
    if entry["kind"] == "base":
        return base_model
    final = entry["run"] / "train" / "final"
    return str(final) if (final / "config.json").is_file() else None


def _template(run: Path, default: str) -> str:
    """Return the task template the run trained with (its sample manifest), else ``default``, else the paper's."""
    manifest = run / "sample" / "manifest.json"
    used = json.loads(manifest.read_text()).get("config", {}).get("task_template") if manifest.is_file() else None
    return used or default or UPFT_TASK_TEMPLATE


EOS_PROMPT_KEY = b"upft.eos_prompt"  # the kept P(EOS)'s Parquet metadata: the prompt settings it was measured under


def kept_eos_path(run: Path, t: int, max_questions: int) -> Path:
    """Return where a tuned run keeps its own P(EOS) after ``t`` tokens on its first ``max_questions``
    questions (0 = all), so that the collapse table still has it once the run's weights are gone (a sweep's
    ``sweep.records_dir``)."""
    return run / "analysis" / f"eos_t{t}_q{max_questions}.parquet"


def _read_kept_eos(kept: Path, prompt: bytes) -> pd.DataFrame | None:
    """Return the kept P(EOS) in ``kept`` if it was measured with the prompt settings ``prompt`` (or before
    they were recorded), else None (logged): P(EOS) under another prompt is another measurement."""
    table = pq.read_table(kept)
    stored = (table.schema.metadata or {}).get(EOS_PROMPT_KEY)
    if stored is not None and stored != prompt:
        log.warning("%s: measured under other prompt settings (%s, now %s); not used", kept, stored.decode(),
                    prompt.decode())
        return None
    return table.to_pandas()


def _newer_than_weights(kept: Path, weights: str) -> bool:
    """Return True when ``kept`` was written after the weights at ``weights`` (measured from these weights)."""
    return kept.stat().st_mtime >= (Path(weights) / "config.json").stat().st_mtime


def _eos_frame(entry: dict, rows: pd.DataFrame, t: int, base_model: str, default_template: str,
               system_prompt: str, max_questions: int, batch_size: int, chat_template: str) -> pd.DataFrame | None:
    """Return per question P(EOS) after ``t`` tokens for one model: a tuned run's kept result under these
    prompt settings when it is newer than the weights at hand (or they are gone), else measured where its
    weights are at hand (and kept, for a tuned run), else None."""
    path = _model_path(entry, base_model)
    kept = kept_eos_path(entry["run"], t, max_questions)
    template = _template(entry["run"], default_template)
    prompt = json.dumps({"chat_template": chat_template, "system_prompt": system_prompt, "template": template},
                        sort_keys=True).encode()
    if entry["kind"] == "tuned" and kept.is_file() and (path is None or _newer_than_weights(kept, path)):
        found = _read_kept_eos(kept, prompt)  # read, not measured again: minutes per run at 0.5B
        if found is not None or path is None:
            return found
    if path is None:
        return None
    sample = rows[rows["sample_index"] == 0].head(max_questions) if max_questions else rows
    log.info("%s: P(EOS) after %d tokens on %d questions (teacher-forced on CPU)", entry["name"], t, len(sample))
    eos = eos_probabilities(path, sample, t, template, system_prompt, batch_size, chat_template)
    if entry["kind"] == "tuned":
        table = pa.Table.from_pandas(eos, preserve_index=False)
        write_parquet_durably(table.replace_schema_metadata({**table.schema.metadata, EOS_PROMPT_KEY: prompt}), kept)
    return eos


def _collapse_row(entry: dict, name: str, rows: pd.DataFrame, t: int | None, base_model: str,
                  default_template: str, system_prompt: str, max_questions: int, batch_size: int,
                  per_question: list[pd.DataFrame], chat_template: str = MODEL_CHAT_TEMPLATE) -> dict:
    """Return one model's row of the collapse table at prefix length ``t``; append its per-question
    P(EOS) to ``per_question`` when its weights, or its kept P(EOS), are at hand."""
    row = {"model": name, "kind": entry["kind"], "prefix_tokens": t, **length_summary(rows, t)}
    eos = None if t is None else _eos_frame(entry, rows, t, base_model, default_template, system_prompt,
                                            max_questions, batch_size, chat_template)
    if eos is not None:
        per_question.append(eos.assign(model=name))
        row.update(eos_questions=int(eos["p_eos_without_template"].notna().sum()),
                   eos_answers_shorter_than_t=int(eos["p_eos_without_template"].isna().sum()),
                   p_eos_with_template=float(eos["p_eos_with_template"].mean()),
                   p_eos_without_template=float(eos["p_eos_without_template"].mean()),
                   median_p_eos_with_template=float(eos["p_eos_with_template"].median()),
                   median_p_eos_without_template=float(eos["p_eos_without_template"].median()))
    return row


def measure_run_eos(run: Path, default_t: int | str, default_template: str = "", system_prompt: str = "",
                    max_questions: int = EOS_QUESTIONS, batch_size: int = 8,
                    chat_template: str = MODEL_CHAT_TEMPLATE) -> Path | None:
    """Measure a finished tuned run's own P(EOS) after its t (as ``measure_collapse`` does for it) and keep
    it under ``run/analysis/``; return that file, or None when the run has no t or no weights."""
    entry = {"name": run.name, "run": run, "eval_dir": run / "eval", "kind": "tuned"}
    t = run_prefix_tokens(run, default_t) if _model_path(entry, "") else None
    if t is None:
        return None
    _eos_frame(entry, eval_rows(entry["eval_dir"]), t, "", default_template, system_prompt, max_questions,
               batch_size, chat_template)
    return kept_eos_path(run, t, max_questions)


def collapse_dir(run_dir: Path) -> Path:
    """Return where the collapse analysis of ``run_dir`` (a run or a sweep) writes collapse.{md,json,parquet,png}."""
    return run_dir / "analysis" / "collapse"


def measure_collapse(run_dir: Path, base_model: str, default_t: int | str, default_template: str = "",
                     system_prompt: str = "", max_questions: int = EOS_QUESTIONS, batch_size: int = 8,
                     chat_template: str = MODEL_CHAT_TEMPLATE) -> pd.DataFrame:
    """Measure every evaluation in ``run_dir`` (see module docstring); write the files; return the table.

    ``max_questions`` caps the questions teacher-forced per model (the length figures use every
    answer). Raises FileNotFoundError when ``run_dir`` holds no finished evaluation."""
    entries = find_evaluations(run_dir)
    if not entries:
        raise FileNotFoundError(f"no evaluation (eval/metrics.json or eval_base/metrics.json) in {run_dir} or its runs")
    out_dir = collapse_dir(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The base is also measured at every other t a tuned model has, so each tuned row has a base row
    # at its own t to be read against (P(EOS) after 32 tokens is not comparable with one after 8).
    own_ts = [run_prefix_tokens(e["run"], default_t) for e in entries]
    tuned_ts = sorted({t for e, t in zip(entries, own_ts) if e["kind"] == "tuned" and t is not None})
    table, per_question, lengths = [], [], {}
    for entry, own_t in zip(entries, own_ts):
        rows = eval_rows(entry["eval_dir"])
        lengths[entry["name"]] = rows["num_output_tokens"].tolist()
        ts = [own_t] + ([t for t in tuned_ts if t != own_t] if entry["kind"] == "base" else [])
        for t in ts:
            name = entry["name"] if t == own_t else f"{entry['name']} @ t={t}"
            table.append(_collapse_row(entry, name, rows, t, base_model, default_template, system_prompt,
                                       max_questions, batch_size, per_question, chat_template))
    result = pd.DataFrame(table)
    result.to_parquet(out_dir / "collapse.parquet", index=False)
    if per_question:
        pd.concat(per_question, ignore_index=True).to_parquet(out_dir / "eos.parquet", index=False)
    write_json_atomic(out_dir / "collapse.json", {"run_dir": str(run_dir), "max_questions": max_questions,
                                                  "models": json.loads(result.to_json(orient="records"))})
    (out_dir / "collapse.md").write_text(collapse_markdown(result))
    plot_collapse(result, lengths, out_dir / "collapse.png")
    return result


def _fmt(value, pattern: str) -> str:
    return "-" if value is None or value != value else pattern.format(value)


def _prob(value) -> str:
    """A probability in %, or in scientific notation when below 0.1% (a random model's P(EOS) is ~1e-5)."""
    if value is None or value != value:
        return "-"
    return f"{value:.2%}" if value >= 1e-3 else f"{value:.1e}"


def collapse_markdown(table: pd.DataFrame) -> str:
    """Return the collapse table as Markdown (shares and probabilities in %)."""
    lines = ["# Collapse: answer lengths and P(EOS) after t tokens", "",
             "Lengths in tokens over every evaluated answer; 'end <= t+2': share of answers that stop (EOS) "
             "within t + 2 tokens; P(EOS): mean probability of EOS right after the model's own first t answer "
             "tokens, teacher-forced, with and without the task template (questions measured; answers shorter "
             "than t are left out and counted).", "",
             "| model | t | answers | mean | p10 / p50 / p90 | end <= t+2 | cut by limit | P(EOS) with template | "
             "P(EOS) without | questions (shorter than t) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(
            f"| {r['model']} | {_fmt(r['prefix_tokens'], '{:.0f}')} | {r['answers']} | {r['mean_tokens']:.1f} | "
            f"{r['p10_tokens']:.0f} / {r['p50_tokens']:.0f} / {r['p90_tokens']:.0f} | "
            f"{_fmt(r['share_end_within_t_plus_2'], '{:.1%}')} | {r['share_cut_by_limit']:.1%} | "
            f"{_prob(r.get('p_eos_with_template'))} | {_prob(r.get('p_eos_without_template'))} | "
            f"{_fmt(r.get('eos_questions'), '{:.0f}')} ({_fmt(r.get('eos_answers_shorter_than_t'), '{:.0f}')}) |")
    return "\n".join(lines) + "\n"


def plot_collapse(table: pd.DataFrame, lengths: dict[str, list[int]], path: Path) -> Path:
    """Write two panels to ``path`` (PNG): answer-length histograms with each model's t + 2, and P(EOS)
    after t tokens with and without the template."""
    import matplotlib  # heavy: loaded when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: loaded when used

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = list(range(0, top + 8, max(1, (top + 8) // 40)))
    for r in table.to_dict("records"):
        if r["model"] in lengths:  # the base's rows at other t share its answers: drawn once
            left.hist(lengths[r["model"]], bins=bins, histtype="step", label=r["model"])
        if r["prefix_tokens"] is not None and r["prefix_tokens"] == r["prefix_tokens"]:
            left.axvline(r["prefix_tokens"] + 2, linestyle=":", color="grey")
    left.set_xlabel("answer length (tokens); dotted: t + 2")
    left.set_ylabel("answers")
    left.legend(fontsize=7)
    measured = table[table.get("p_eos_without_template", pd.Series(dtype=float)).notna()] \
        if "p_eos_without_template" in table else table.iloc[:0]
    xs = range(len(measured))
    right.bar([x - 0.2 for x in xs], measured.get("p_eos_with_template", []), 0.4, label="with template")
    right.bar([x + 0.2 for x in xs], measured.get("p_eos_without_template", []), 0.4, label="without")
    right.set_xticks(list(xs), list(measured["model"]), rotation=20, fontsize=7)
    right.set_ylim(0, 1)
    right.set_ylabel("P(EOS) after t answer tokens")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
