"""The ``upft`` command: thin wrappers over ``upft_ray.api``. Heavy libraries load only when a command
runs, so ``upft --help`` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from upft_ray import api
from upft_ray.config.model_refs import BUNDLED_MODELS, is_checkpoint_dir
from upft_ray.engine.models import declared_licence, prepare_bundled_model, prepared_path
from upft_ray.io.public_sets import PUBLIC_SETS
from upft_ray.orchestration.provenance import ALLOW_ENV
from upft_ray.runtime.logs import NORMAL, QUIET, VERBOSE

app = typer.Typer(help="UPFT on Ray: sample prefixes with vLLM, fine-tune with DeepSpeed, evaluate.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Bundled models: list them, prepare HF checkpoints from their GGUF files.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
analyze_app = typer.Typer(help="Measure prefix self-consistency and where errors arise, on your model and data.",
                          no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")
data_app = typer.Typer(help="The paper's datasets: list them, prepare question files from their public releases.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

CONFIG = typer.Option(None, "--config", "-c", help="pipeline YAML (configs/quickstart.yaml); defaults if absent")
OVERRIDES = typer.Argument(None, help="overrides as dotted key=value, e.g. sample.prefix_tokens=16")
RUN_DIR = typer.Option(None, "--run-dir", help="run directory (same as run_dir=...)")


@app.callback()
def options(verbose: bool = typer.Option(False, "--verbose", "-v", help="also print Ray's and vLLM's own logs"),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="print only warnings, errors and results"),
            allow_code_change: bool = typer.Option(False, help="continue a run directory written by other code "
                                                   "(refused by default, like a changed config)")):
    """Options every command takes."""
    api.configure_logging(VERBOSE if verbose else QUIET if quiet else NORMAL)
    if allow_code_change:
        os.environ[ALLOW_ENV] = "1"


def _load(config: Optional[Path], overrides: Optional[list[str]], run_dir: Optional[Path]):
    extra = list(overrides or []) + ([f"run_dir={run_dir}"] if run_dir else [])
    try:
        return api.load_config(config, extra)
    except (api.ConfigError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)


def _guard(fn: Callable, *args):
    """Run a stage; a run that cannot start (its checks, the lease) exits 2 naming each problem, missing
    inputs and bad data found later exit 1 with a one-line error."""
    try:
        return fn(*args)
    except (api.ConfigError, api.LeaseHeld, api.LeaseError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


def _stage(fn: Callable, config, overrides, run_dir, *extra):
    return _guard(fn, _load(config, overrides, run_dir), *extra)


@app.command()
def sample(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
           run_dir: Optional[Path] = RUN_DIR):
    """Sample prefixes (and the p share of full solutions) into RUN/sample/."""
    _stage(api.sample, config, overrides, run_dir)


@app.command()
def train(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
          run_dir: Optional[Path] = RUN_DIR):
    """Fine-tune on RUN/sample/ with Ray Train + DeepSpeed into RUN/train/ (HF export in final/)."""
    _stage(api.train, config, overrides, run_dir)


@app.command()
def evaluate(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
             run_dir: Optional[Path] = RUN_DIR,
             model: Optional[str] = typer.Option(None, help="'base', a checkpoint path; default RUN/train/final")):
    """Evaluate a model greedily on eval.benchmarks into RUN/eval/ (RUN/eval_base/ for 'base'); resumes."""
    _stage(api.evaluate, config, overrides, run_dir, model)


@app.command()
def run(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
        run_dir: Optional[Path] = RUN_DIR):
    """Run sample -> train -> evaluate (base and UPFT) and write RUN/report.md."""
    report = _stage(api.run, config, overrides, run_dir)
    typer.echo(report.read_text())
    typer.echo(f"report: {report}")


@app.command()
def sweep(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
          run_dir: Optional[Path] = RUN_DIR):
    """Run sweep.variants x sweep.seeds (baselines, ablations, reproduction) and write RUN/report.md."""
    report_path, failures = _stage(api.sweep, config, overrides, run_dir)
    typer.echo(report_path.read_text())
    typer.echo(f"report: {report_path}")
    if failures:
        typer.echo(f"error: {len(failures)} run(s) failed: {', '.join(failures)}", err=True)
        raise typer.Exit(1)


@analyze_app.command("consistency")
def analyze_consistency(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
                        run_dir: Optional[Path] = RUN_DIR):
    """Sample analyze.num_samples solutions per question; agreement on the first t tokens, per t (table + PNG)."""
    _stage(api.analyze_consistency, config, overrides, run_dir)


@analyze_app.command("rollouts")
def analyze_rollouts(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
                     run_dir: Optional[Path] = RUN_DIR):
    """Roll out completions from points along correct and incorrect solutions: success rate by position."""
    _stage(api.analyze_rollouts, config, overrides, run_dir)


@analyze_app.command("collapse")
def analyze_collapse(config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES,
                     run_dir: Optional[Path] = RUN_DIR,
                     max_questions: int = typer.Option(api.EOS_QUESTIONS,
                                                       help="questions teacher-forced per model (0 = all)"),
                     batch_size: int = typer.Option(8, help="sequences per CPU forward pass")):
    """Answer lengths, share ending within t+2 tokens, P(EOS) after t tokens with/without the template (table + PNG)."""
    md = _stage(api.analyze_collapse, config, overrides, run_dir, max_questions, batch_size)
    typer.echo(md.read_text())
    typer.echo(f"wrote {md.parent}/collapse.{{md,json,parquet,png}}")


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="one or more run directories"),
           out: Optional[Path] = typer.Option(None, help="where comparison.md/.png go (several runs); "
                                                         "default: the first run's parent")):
    """Print RUN/report.md for one run; for several, a comparison table + PNG chart."""
    missing = [str(d) for d in run_dirs if not d.is_dir()]
    if missing:
        typer.echo(f"error: run directory not found: {', '.join(missing)}", err=True)
        raise typer.Exit(1)
    runs = [d.resolve() for d in run_dirs]
    if len(runs) == 1:
        typer.echo(api.write_report(runs[0]).read_text())
        return
    md, png = _guard(api.write_comparison, runs, out or runs[0].parent)
    typer.echo(md.read_text())
    typer.echo(f"wrote {md} and {png}")


@models_app.command("list")
def models_list():
    """List bundled models: prepared or not, where, what, their source packages and licences."""
    for name, spec in BUNDLED_MODELS.items():
        state = "prepared" if is_checkpoint_dir(prepared_path(name)) else "not prepared"
        source = "source: " + " + ".join(spec.packages) + (f" (extra [{spec.extra}])" if spec.extra else "")
        licence = f"licence in the packages' metadata: {declared_licence(spec)}; upstream: {spec.upstream_licence}"
        typer.echo(f"{name}\t{state}\t{prepared_path(name)}\t{spec.description}\t{source}\t{licence}")


@models_app.command("prepare")
def models_prepare(name: str = typer.Argument("smollm2-135m-instruct", help="bundled model name"),
                   force: bool = typer.Option(False, help="rebuild even if already prepared")):
    """Convert a bundled GGUF model into an HF checkpoint in the cache (once; idempotent)."""
    if name not in BUNDLED_MODELS:
        typer.echo(f"error: unknown bundled model {name!r}; known: {', '.join(BUNDLED_MODELS)}", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(prepare_bundled_model(name, force=force))
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


@data_app.command("list")
def data_list():
    """List the paper's datasets: name, kind, the paper's size, where the release lives."""
    for name, spec in PUBLIC_SETS.items():
        typer.echo(f"{name}\t{spec.kind}\t{spec.expected_rows}\t{spec.url}\t{spec.title}")


@data_app.command("prepare")
def data_prepare(name: str = typer.Argument(..., help=f"dataset: {', '.join(PUBLIC_SETS)}"),
                 source: str = typer.Option(..., "--source", help="the release: a file, glob, download directory, "
                                            "HF save_to_disk directory, s3:// or gs:// URI"),
                 out: Path = typer.Option(..., "--out", help="directory for NAME.jsonl, NAME.rejected.jsonl and "
                                          "NAME.manifest.json"),
                 split: Optional[str] = typer.Option(None, help="split of an HF DatasetDict directory "
                                                     "(default: the set's usual one)"),
                 gold: Optional[str] = typer.Option(None, help="release column of the gold answer (math500: answer "
                                                    "or solution)")):
    """Write a question file that `upft sample` (training sets) or `upft evaluate` (benchmarks) reads as it is."""
    if name not in PUBLIC_SETS:
        typer.echo(f"error: unknown dataset {name!r}; known: {', '.join(PUBLIC_SETS)}", err=True)
        raise typer.Exit(2)
    manifest = _guard(api.prepare_public_set, name, source, out, split, gold)
    typer.echo(f"{manifest['output']}\t{manifest['rows_written']} rows\t{manifest['consumer']}")


def main() -> None:
    """Console entry point."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
