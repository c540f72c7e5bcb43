"""Stream a DeepSpeed checkpoint into an HF safetensors checkpoint, never holding the model in memory.

DeepSpeed's ``zero_to_fp32`` merges every rank's fp32 partitions into one state dict (ZeRO-2 even
concatenates them, doubling it) and unpickles with ``weights_only=False``. Here each checkpoint
file is opened with ``torch.load(mmap=True, weights_only=True)`` (only metadata is read), and every
parameter is copied in chunks of at most ``CHUNK_ELEMENTS`` from the mapped fp32 master weights
(the partitions of every rank, in rank order) into the output dtype and straight into a
safetensors file written by hand (header first, then the bytes). The mapped pages just read are
dropped again (``madvise(MADV_DONTNEED)``: the mapping is private and never written, so the kernel
re-reads them from the file if touched again), so the process holds one chunk at a time plus the
metadata: peak RSS stays near that of Python + torch + transformers (``bench/export_memory.py``).

Output: ``model.safetensors`` (or ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``),
``config.json`` (``dtype`` set to the export dtype), ``generation_config.json`` and the tokenizer when the
base model has them. A ZeRO-0 checkpoint has no fp32 partitions: its module weights are exported, or in bf16 the
fp32 master weights DeepSpeed's optimizer keeps beside them (the module's are those rounded to bf16).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import re
import struct
from pathlib import Path

from upft_ray.config import TrainConfig
from upft_ray.io.durable import commit_dir, remove_path, staging_for
from upft_ray.training.checkpointing import safe_load

CHUNK_ELEMENTS = 1 << 24  # 64 MiB of fp32 per copy
_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "int64": "I64", "int32": "I32",
                       "uint8": "U8", "bool": "BOOL"}


def resolve_export_dtype(train: TrainConfig) -> str:
    """Return the export dtype name for ``train`` (``auto``: bfloat16 with GPUs, else float32)."""
    if train.export_dtype == "auto":
        return "bfloat16" if train.use_gpu else "float32"
    return train.export_dtype


def _file_mapping(address: int) -> tuple[int, int] | None:
    """Return the (start, end) of the file-backed mapping holding ``address``, or None (e.g. heap memory)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        span, inode = fields[0], fields[4]
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= address < hi:
            return (lo, hi) if inode != "0" and len(fields) > 5 else None
    return None


def _release(tensor) -> None:
    """Drop the resident pages of a tensor that views a file mapping (checkpoint opened with mmap).

    Only pages of a file-backed mapping are dropped: they are clean and private, so the kernel re-reads
    them from the file if touched again. Anonymous memory would be zeroed, so it is never touched."""
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    mapping = _file_mapping(start)
    if mapping is None or end > mapping[1]:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    start = max(mapping[0], start // mmap.PAGESIZE * mmap.PAGESIZE)
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED


class _Flat:
    """A virtual concatenation of 1-D tensors (one rank's flat fp32 groups); ``read`` yields slices."""

    def __init__(self, pieces: list):
        self.pieces = [p.reshape(-1) for p in pieces]

    def read(self, start: int, count: int):
        for piece in self.pieces:
            n = piece.numel()
            if start >= n:
                start -= n
                continue
            take = min(count, n - start)
            yield piece.narrow(0, start, take)
            count -= take
            start = 0
            if count == 0:
                return
        if count:
            raise ValueError("ZeRO checkpoint partitions are shorter than the parameter shapes say")


def _rank_of(path: Path) -> int:
    return int(re.search(r"zero_pp_rank_(\d+)", path.name).group(1))


def _sources(tag_dir: Path):
    """Return ({name: (shape, slice generator factory)}, shared aliases, zero stage) for a checkpoint tag dir."""
    optim_files = sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"), key=_rank_of)
    model_files = sorted(tag_dir.glob("*model_states.pt"))
    first = safe_load(model_files[0], mmap=True)
    if first.get("frozen_param_shapes"):
        raise ValueError(f"{tag_dir}: frozen parameters are not supported by the export")
    buffers = {k: v for k, v in first["module"].items() if k in first["buffer_names"]}
    sources = {k: (tuple(v.shape), lambda v=v: iter([v.reshape(-1)])) for k, v in buffers.items()}
    shared = dict(first.get("shared_params") or {})
    if not optim_files:  # ZeRO-0: the module holds the weights, or in bf16 the optimizer's fp32 copies do
        for k, v in first["module"].items():
            sources[k] = (tuple(v.shape), lambda v=v: iter([v.reshape(-1)]))
        sources.update(_zero0_masters(first, tag_dir))
        return sources, shared, 0
    optims = [safe_load(f, mmap=True)["optimizer_state_dict"] for f in optim_files]
    stage = int(optims[0]["zero_stage"])
    world = len(optims)
    if stage <= 2:
        paddings = optims[0].get("param_alignment_paddings")
        for g, shapes in enumerate(first["param_shapes"]):
            group = _Flat([o["single_partition_of_fp32_groups"][g] for o in optims])
            offset = 0
            for i, (name, shape) in enumerate(shapes.items()):
                n = shape.numel()
                sources[name] = (tuple(shape), lambda group=group, offset=offset, n=n: group.read(offset, n))
                offset += n + (paddings[g][i] if paddings else 0)
    else:
        flats = [_Flat(list(o["fp32_flat_groups"])) for o in optims]
        offset = 0
        for shapes in first["param_shapes"]:
            for name, shape in shapes.items():
                n = shape.numel()
                part = -(-n // world)  # every rank holds ceil(n / world) elements, the last one padded
                sources[name] = (tuple(shape), lambda offset=offset, part=part, n=n: _zero3_param(flats, offset,
                                                                                                   part, n))
                offset += part
    return sources, shared, stage


def _zero0_masters(model_states: dict, tag_dir: Path) -> dict:
    """Return {parameter name: (shape, slice generator factory)} over the fp32 master weights of a ZeRO-0
    checkpoint trained in bf16 (DeepSpeed's FP16 optimizers keep them in the optimizer state: ``fp32_groups``,
    or ``fp32_groups_flat`` when fused; the module holds them rounded to bf16), {} where there are none (fp32).

    The copies hold the module's parameters in order (the state dict's keys less buffers and tied aliases); raises
    RuntimeError when their sizes or values say otherwise."""
    import torch  # heavy: the export runs where training ran

    optimizer = model_states.get("optimizer") or {}
    groups = optimizer.get("fp32_groups") or [[flat] for flat in optimizer.get("fp32_groups_flat") or []]
    if not groups:
        return {}
    masters = _Flat([piece for group in groups for piece in group])
    params, seen = [], set()
    for name, tensor in model_states["module"].items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if name not in model_states["buffer_names"] and where not in seen:
            seen.add(where)
            params.append((name, tensor))
    sizes = (sum(t.numel() for _, t in params), sum(p.numel() for p in masters.pieces))
    if sizes[0] != sizes[1]:
        raise RuntimeError(f"{tag_dir}: the optimizer's fp32 weights hold {sizes[1]} values, the module {sizes[0]}")
    sources, offset = {}, 0
    for name, tensor in params:
        n = tensor.numel()
        ends = torch.cat([next(masters.read(offset + i, 1)) for i in (0, n - 1)]).to(tensor.dtype) if n else None
        if n and not torch.allclose(ends, tensor.reshape(-1)[[0, n - 1]], rtol=0, atol=0, equal_nan=True):
            raise RuntimeError(f"{tag_dir}: the optimizer's fp32 weights do not match the module's {name}")
        sources[name] = (tuple(tensor.shape), lambda offset=offset, n=n: masters.read(offset, n))
        offset += n
    return sources


def _zero3_param(flats, offset: int, part: int, n: int):
    left = n
    for flat in flats:
        for piece in flat.read(offset, part):
            if left <= 0:
                return
            piece = piece.narrow(0, 0, min(piece.numel(), left))
            left -= piece.numel()
            yield piece


def _write_safetensors(path: Path, entries: list, dtype) -> None:
    """Write ``entries`` [(name, shape, out dtype, slices factory)] as one safetensors file, chunk by chunk."""
    import torch  # heavy: loaded when used

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, out_dtype, _ in entries:
        size = int(torch.Size(shape).numel()) * torch.empty((), dtype=out_dtype).element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[str(out_dtype).removeprefix("torch.")], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape, out_dtype, slices in entries:
            for piece in slices():
                for start in range(0, piece.numel(), CHUNK_ELEMENTS):
                    src = piece.narrow(0, start, min(CHUNK_ELEMENTS, piece.numel() - start))
                    out = src.to(dtype=out_dtype, copy=True)
                    fh.write(out.view(torch.uint8).numpy().data)
                    _release(src)
                    del out


def _matching_sources(checkpoint_dir: Path, model_path: str):
    """Return (config, parameter name -> (shape, slices), names to write, the model's expected state dict)
    from the checkpoint's ``latest`` tag. Raises RuntimeError when they do not match ``model_path``."""
    import torch  # heavy: the export runs where training ran
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy: loaded when used

    tag_dir = checkpoint_dir / (checkpoint_dir / "latest").read_text().strip()
    sources, shared, _ = _sources(tag_dir)
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        expected = AutoModelForCausalLM.from_config(config).state_dict()
    tied = set(shared) if getattr(config, "tie_word_embeddings", False) else set()
    if "lm_head.weight" in sources and tied == set() and getattr(config, "tie_word_embeddings", False):
        tied = {"lm_head.weight"}  # ZeRO-0 modules list the tied head as a key of its own
    for alias, source in shared.items():
        if alias not in tied:
            sources[alias] = sources[source]
    names = [k for k in sources if k not in tied]
    missing = set(expected) - set(names) - tied
    unexpected = set(names) - set(expected)
    wrong = [k for k in names if k in expected and tuple(expected[k].shape) != sources[k][0]]
    if missing or unexpected or wrong:
        raise RuntimeError(f"checkpoint {checkpoint_dir} does not match {model_path}: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}, wrong shape {wrong}")
    return config, sources, names, expected


def _shard_plan(sources: dict, names: list[str], expected: dict, out_dtype, max_shard_bytes: int):
    """Return (shards of (name, shape, dtype, slices), total bytes) for the safetensors files."""
    import torch  # heavy: the export runs where training ran

    shards, size, total = [[]], 0, 0
    for name in names:
        shape, slices = sources[name]
        kind = out_dtype if expected[name].is_floating_point() else expected[name].dtype
        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=kind).element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape, kind, slices))
        size += nbytes
        total += nbytes
    return shards, total


def export_hf_checkpoint(checkpoint_dir: Path, model_path: str, out_dir: Path, dtype: str = "float32",
                         max_shard_bytes: int = 4 << 30) -> Path:
    """Write the weights of a DeepSpeed checkpoint (its ``latest`` tag) as an HF checkpoint in ``dtype``
    (``float32`` or ``bfloat16``); return ``out_dir`` (replaced atomically; the old one's delete is fenced).

    Raises RuntimeError when the checkpoint's parameters do not match ``model_path``'s architecture."""
    import torch  # heavy: the export runs where training ran

    out_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    config, sources, names, expected = _matching_sources(Path(checkpoint_dir), model_path)
    shards, total = _shard_plan(sources, names, expected, out_dtype, max_shard_bytes)
    staging = staging_for(out_dir)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(staging / fname, shard, out_dtype)
        weight_map.update({name: fname for name, *_ in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config.dtype = out_dtype
    config.save_pretrained(staging)
    _copy_generation_and_tokenizer(model_path, staging)
    remove_path(out_dir)  # fenced: a fenced attempt cannot delete the new holder's export
    commit_dir(staging, out_dir)  # fsynced files, rename, fsynced parent (upft_ray.io.durable)
    return out_dir


def _copy_generation_and_tokenizer(model_path: str, staging: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig  # heavy: loaded when used

    source = Path(model_path)
    if (source / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(model_path).save_pretrained(staging)
    if any((source / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        AutoTokenizer.from_pretrained(model_path).save_pretrained(staging)
