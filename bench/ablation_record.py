"""Record an ablation sweep: bench/results/ablation_NAME.md and its summary block in bench/RESULTS.md.

    .venv/bin/upft sweep -c configs/ablation-collapse.yaml             # the runs (hours; resumes)
    .venv/bin/upft analyze collapse -c configs/ablation-collapse.yaml  # optional: answer lengths, P(EOS)
    .venv/bin/python bench/ablation_record.py                          # this: record what is finished

NAME is ``collapse`` (the 135M ablation, the default) or ``qwen05b`` (``--ablation qwen05b``: the same
recipe variants at 0.5B, configs/ablation-qwen05b.yaml).

Nothing is run here: the sweep's report is rebuilt from the finished run directories (the same code
as `upft sweep` uses; runs of another config are refused, never reported), the collapse analysis is
appended where it exists (its PNG copied to bench/results/ablation_NAME.png), and the summary (accuracy,
differences vs base and vs SFT, and which variants the tests call better / worse / within noise) replaces
the marked block in bench/RESULTS.md.
A partial sweep is recorded as partial: the runs column says how many of each variant's seeds are in.
A machine holding fewer finished runs than the record (the runs were made elsewhere), or no collapse
analysis where the record has one, or one that leaves out finished runs (run before they finished), is
refused, the record left as it is (``--force`` records what is here).
README.md's "What UPFT does at 135M and at 0.5B" tables are written from the records of both ablations
(the base and the variants both sweeps run, each vs base and vs SFT, and their collapse analysis where it was run).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from doc_blocks import markers, replace_block  # noqa: E402


class Ablation:
    """Where an ablation's config, record and RESULTS.md block are, and the command that records it."""

    def __init__(self, name: str):
        self.name = name

    @property
    def config(self) -> Path:
        return REPO / "configs" / f"ablation-{self.name}.yaml"

    @property
    def record(self) -> Path:
        return REPO / "bench" / "results" / f"ablation_{self.name}.md"

    @property
    def command(self) -> str:
        return "python bench/ablation_record.py" + ("" if self.name == "collapse" else f" --ablation {self.name}")

    @property
    def markers(self) -> tuple[str, str]:
        return markers(f"ablation-{self.name}", self.command.removeprefix("python "))


ABLATIONS = {name: Ablation(name) for name in ("collapse", "qwen05b")}
CONFIG, RECORD, COMMAND = ABLATIONS["collapse"].config, ABLATIONS["collapse"].record, ABLATIONS["collapse"].command
BEGIN, END = ABLATIONS["collapse"].markers
# README.md's "What UPFT does at 135M and at 0.5B": per ablation, the variants both sweeps share (the 135M
# sweep's `paper` is the official recipe at t = 8, the 0.5B sweep's `t8`), rendered from the two records
ANSWER_BEGIN, ANSWER_END = markers("ablation-answer", "bench/ablation_record.py")
ANSWER = {"collapse": ("135M", ["paper", "t32", "eos-none", "sft"]),
          "qwen05b": ("0.5B", ["t8", "t32", "eos-none", "sft"])}


def md_section(report: str, heading: str) -> list[str]:
    """Return the lines of the Markdown section whose heading starts with ``heading`` (without it)."""
    lines, out, inside = report.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            inside = line.startswith(heading)
            continue
        if inside:
            out.append(line)
    text = "\n".join(out).strip("\n")  # blank lines inside a section stay: a table needs one before it
    return text.split("\n") if text else []


def _table(lines: list[str]) -> list[dict[str, str]]:
    """Return the rows of the Markdown table in ``lines`` as dicts keyed by its header's cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    return [dict(zip(rows[0], row)) for row in rows[2:]] if rows else []


def verdict_lines(rows: list[str], versus: str) -> list[str]:
    """Return one line per benchmark naming the variants whose difference vs ``versus`` is better /
    worse / within noise, read from the rows of a sweep report's differences table."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for row in _table(rows):
        if "verdict" not in row:  # a row shorter than the header
            continue
        grouped.setdefault(row["benchmark"], {}).setdefault(row["verdict"].replace(" (no spread)", ""), []) \
            .append(row["variant"])
    return [f"- vs {versus} on {name}: " + "; ".join(f"**{word}**: {', '.join(grouped[name].get(word, [])) or 'none'}"
                                                    for word in ("better", "within noise", "worse"))
            for name, _ in sorted(grouped.items())]


def _runs_dropped(cell: str) -> str:
    """Return a table cell without its "(n runs)" tail (the answer's runs column says it)."""
    return re.sub(r" \(\d+ runs?\)$", "", cell)


def _versus(row: dict[str, str] | None) -> str:
    """Return a differences row as "difference, p P: **verdict** (runs b / w / n)" ("-" without a paired run):
    the tail counts the runs each own paired test calls better / worse / within noise."""
    if row is None or row["verdict"] == "-":
        return "-"
    return (f"{_runs_dropped(row['difference (pts)'])}, p {row['p']}: **{row['verdict']}** "
            f"(runs {row['runs better / worse / within noise']})")


def answer_section(name: str, record: str) -> list[str]:
    """Return README's lines for the ablation ``name`` from its record's text: a line saying what ran and how
    much of it is in, and a table of the base and ANSWER's variants with their differences vs base and SFT."""
    size, variants = ANSWER[name]
    model = re.search(r"^Model `([^`]+)`", record, re.M).group(1)
    when = re.search(r"^Recorded (.+?) UTC on (.+?) by ", record, re.M)
    finished = re.search(r"\((\d+ of \d+ runs finished)", record).group(1)
    accuracy = _table(md_section(record, "## Accuracy"))
    benchmarks = [key for key in accuracy[0] if key not in ("variant", "method", "runs", "avg")]
    versus = {(kind, row["variant"], row["benchmark"]): row for kind in ("base", "SFT")
              for row in _table(md_section(record, f"## Differences vs {kind}"))}
    lines = [f"**{size}**: `{model}`, {finished} (recorded {when.group(1)} UTC on {when.group(2)}; "
             f"`{ABLATIONS[name].record.relative_to(REPO)}`)", "",
             "| variant | benchmark | runs | accuracy (%) | vs base (pts) | vs SFT (pts) |",
             "|---|---|---|---|---|---|"]
    by_variant = {row["variant"]: row for row in accuracy}
    for variant in ["base", *variants]:
        row = by_variant.get(variant)
        for benchmark in benchmarks if row else []:
            lines.append(f"| {variant} | {benchmark} | {row['runs']} | {_runs_dropped(row[benchmark])} | "
                         f"{_versus(versus.get(('base', variant, benchmark)))} | "
                         f"{_versus(versus.get(('SFT', variant, benchmark)))} |")
    collapse = collapse_lines(record, variants)
    if collapse:
        lines += ["", f"{size}, the collapse analysis (`upft analyze collapse`): answer lengths and P(EOS) right after "
                  "t answer tokens, one value per run (seed 1 / 2 / 3):", "", *collapse]
    return lines


def collapse_lines(record: str, variants: list[str]) -> list[str]:
    """Return README's table of answer lengths and P(EOS) after t for the base and ``variants``, one value per
    run (seed order), read from the record's collapse analysis; [] when the record has none."""
    order = ["base", *variants]
    per_variant: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in _table(md_section(record, "## Collapse analysis")):
        variant = re.sub(r"-s\d+$", "", row["model"].split(" @ ")[0].split("/")[0])  # "t32-s1/eval" -> "t32"
        if variant in order:
            per_variant.setdefault((variant, row["t"]), []).append(row)
    lines = ["| variant | t | runs | median answer (tokens) | answers ending within t + 2 "
             "| P(EOS) after t, no template |", "|---|---|---|---|---|---|"]
    for (variant, t), rows in sorted(per_variant.items(), key=lambda item: (order.index(item[0][0]), int(item[0][1]))):
        rows.sort(key=lambda row: row["model"])
        medians = " / ".join(row["p10 / p50 / p90"].split(" / ")[1] for row in rows)
        lines.append(f"| {variant} | {t} | {len(rows)} | {medians} | {' / '.join(row['end <= t+2'] for row in rows)} | "
                     f"{' / '.join(row['P(EOS) without'] for row in rows)} |")
    return lines if len(lines) > 2 else []


def answer_block() -> str:
    """Return README.md's answer block (markers included) from the ablations recorded so far."""
    sections = [answer_section(name, ABLATIONS[name].record.read_text())
                for name in ANSWER if ABLATIONS[name].record.is_file()]
    return "\n".join([ANSWER_BEGIN, *(line for section in sections for line in ["", *section]), "", ANSWER_END])


def stage_times(run_dirs: list[Path], base_dir: Path) -> str:
    """Return "wall time per run, median [min, max]: sample a s [lo, hi] (n runs), train ..., evaluation ...;
    base evaluation d s" (or "no finished run") from the finished runs' manifests: what the rest of a sweep
    will take. A stage resumed from an earlier attempt records only its last attempt's time, so it is left out."""
    import statistics

    def wall(path: Path) -> float | None:
        if not path.is_file():
            return None
        m = json.loads(path.read_text())
        return None if m.get("shards", {}).get("reused", 0) else m.get("wall_time_s")

    parts = []
    for stage, rel in (("sample", "sample/manifest.json"), ("train", "train/manifest.json"),
                       ("evaluation", "eval/metrics.json")):
        times = [t for t in (wall(d / rel) for d in run_dirs) if t is not None]
        if times:
            parts.append(f"{stage} {statistics.median(times):.0f} s [{min(times):.0f}, {max(times):.0f}] "
                         f"({len(times)} runs)")
    base = wall(base_dir / "eval_base" / "metrics.json")
    text = "wall time per run, median [min, max]: " + ", ".join(parts) if parts else "no finished run"
    return text + (f"; base evaluation {base:.0f} s" if base is not None else "")


def render_block(record: str, ablation: Ablation = ABLATIONS["collapse"]) -> str:
    """Return bench/RESULTS.md's block of ``ablation`` (markers included) from its record's text."""
    begin, end = ablation.markers
    header = record.splitlines()[2]  # "Recorded ... by ... (N of M runs finished)."
    accuracy = md_section(record, "## Accuracy")
    vs_base = md_section(record, "## Differences vs base")
    vs_sft = md_section(record, "## Differences vs SFT")
    lines = [begin, "", header, "", *accuracy, "", "Differences vs the base model (paired on the same questions, "
             "then over seeds):", "", *vs_base]
    if vs_sft:
        lines += ["", "Differences vs SFT (the same seed's SFT run):", "", *vs_sft]
    collapse = md_section(record, "## Collapse analysis")
    if collapse:
        lines += ["", "Answer lengths and P(EOS) after t tokens (`upft analyze collapse`; in "
                  f"`{ablation.record.relative_to(REPO)}`):", "", *collapse]
    lines += ["", "Verdicts at alpha 0.05 (t test over seeds; one seed: that run's McNemar test):", "",
              *verdict_lines(vs_base, "base"), *(verdict_lines(vs_sft, "SFT") if vs_sft else [])]
    return "\n".join(lines + ["", end])


def recorded_runs(record: Path) -> int:
    """Return how many finished runs the record ``record`` holds (0 when there is none)."""
    found = re.search(r"\((\d+) of \d+ runs finished", record.read_text()) if record.is_file() else None
    return int(found.group(1)) if found else 0


def shown(path: Path) -> Path:
    """Return ``path`` relative to the repository when it is inside it (as a command is typed there)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def refusal(ablation: Ablation, cfg, finished: list[str]) -> str | None:
    """Return why recording now would lose or stale what the record holds (None when it would not): fewer
    finished runs here than recorded (the runs are on another machine), or a collapse analysis that is
    recorded but missing here, or that leaves out finished runs (it ran before they finished)."""
    from upft_ray.analysis.collapse import collapse_dir

    recorded, config = recorded_runs(ablation.record), shown(ablation.config)
    if len(finished) < recorded:
        return (f"{ablation.record} holds {recorded} finished runs, {cfg.run_path} only {len(finished)} (the runs "
                "of another machine; a sweep with sweep.records_dir restores them)")
    analysis = collapse_dir(cfg.run_path) / "collapse.json"
    again = f"run `upft analyze collapse -c {config}` first (it reads each kept run's P(EOS))"
    if not analysis.is_file():
        had = ablation.record.is_file() and "\n## Collapse analysis" in ablation.record.read_text()
        return f"{ablation.record} holds a collapse analysis and {analysis} is missing: {again}" if had else None
    analysed = {m["model"].split("/")[0] for m in json.loads(analysis.read_text())["models"]}
    missing = [name for name in finished if name not in analysed]
    return f"the collapse analysis {analysis} leaves out {', '.join(missing)}: {again}" if missing else None


def finished_runs(cfg) -> tuple[list[Path], int]:
    """Restore the runs an earlier machine kept in ``sweep.records_dir``; return (the sweep's finished run
    directories, how many runs it plans)."""
    from upft_ray.orchestration.sweep import plan_sweep, restore_kept_runs

    restore_kept_runs(cfg)
    runs, states, _ = plan_sweep(cfg)
    return [c.run_path for v, s, c in runs if states[f"{v}-s{s}"][0] == "done"], len(runs)


def record_text(cfg, config: Path, command: str, record: Path, finished: list[Path], planned: int) -> str:
    """Return a sweep's record: its report (``upft sweep``'s own) headed by when, where and by ``command`` it was
    recorded and the finished runs' stage times, with the collapse analysis appended where it was run (its PNG
    copied beside ``record``)."""
    from upft_ray.analysis.collapse import collapse_dir
    from upft_ray.orchestration.sweep import sweep_report
    from upft_ray.runtime.hardware import machine_facts

    m = machine_facts()
    header = (f"Recorded {m['date_utc']} UTC on {m['cpu']} x{m['cpu_count']} by `{command}` from "
              f"`upft sweep -c {shown(config)}` ({len(finished)} of {planned} runs finished; "
              f"{stage_times(finished, cfg.run_path / 'base')}).")
    text = sweep_report(cfg, {}).replace("\n", f"\n\n{header}\n", 1)
    collapse = collapse_dir(cfg.run_path) / "collapse.md"
    if not collapse.is_file():
        return text
    shutil.copyfile(collapse.with_name("collapse.png"), record.with_suffix(".png"))
    analysis = collapse.read_text().split("\n", 1)[1]
    return text + f"\n## Collapse analysis (`upft analyze collapse -c {shown(config)}`)\n\n" + analysis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), default="collapse")
    parser.add_argument("--force", action="store_true",
                        help="record what is here even when the record holds more runs or a fuller collapse analysis")
    args = parser.parse_args()
    ablation = ABLATIONS[args.ablation]
    from upft_ray.config import load_config

    cfg = load_config(ablation.config)
    finished, planned = finished_runs(cfg)
    done = len(finished)
    why = refusal(ablation, cfg, [d.name for d in finished])
    if why and not args.force:
        print(f"[ablation-record] refused, the record left as it is: {why}; --force records what is here",
              file=sys.stderr)
        return 1
    text = record_text(cfg, ablation.config, ablation.command, ablation.record, finished, planned)
    ablation.record.write_text(text)
    changed = replace_block(REPO / "bench" / "RESULTS.md", *ablation.markers, render_block(text, ablation))
    answered = replace_block(REPO / "README.md", ANSWER_BEGIN, ANSWER_END, answer_block())
    print(f"[ablation-record] {done}/{planned} runs; wrote {ablation.record}; "
          f"RESULTS.md {'updated' if changed else 'unchanged'}; README.md {'updated' if answered else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
