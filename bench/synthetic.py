"""Random models and UPFT-shaped example sets, for checks and benchmarks of the real loop (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                  max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6)
QWEN25_15B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
                  max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6)
TINY_QWEN2 = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                  max_position_embeddings=1024)


def write_random_model(out_dir: Path, shape: dict, seed: int = 0, dtype: str = "float32") -> Path:
    """Save a randomly initialised Qwen2 causal LM of ``shape`` (Qwen2Config kwargs) to ``out_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).to(getattr(torch, dtype))
    model.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def write_upft_examples(out_dir: Path, n: int, vocab: int, prompt_tokens: int, prefix_tokens: int,
                        full_tokens: int, full_share: float = 0.1, seed: int = 0, prompt_spread: int = 0) -> Path:
    """Write ``part-00000.parquet`` with UPFT-shaped examples: prefix ones (prompt + t+1 response tokens,
    the +1 being EOS) and a ``full_share`` of full solutions (prompt + ``full_tokens``); random ids. Prompts are
    ``prompt_tokens`` long, or uniform within +-``prompt_spread`` of it (real questions vary)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from upft_ray.training.examples import EXAMPLES_SCHEMA

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full = rng.random(n) < full_share
    responses = np.where(full, full_tokens, prefix_tokens + 1)
    prompts = (rng.integers(prompt_tokens - prompt_spread, prompt_tokens + prompt_spread + 1, size=n)
               if prompt_spread else np.full(n, prompt_tokens))
    rows = {"question_id": [f"q{i}" for i in range(n)], "kind": ["full" if f else "prefix" for f in full],
            "input_ids": [rng.integers(1, vocab, size=int(p) + int(r)).astype(np.int32).tolist()
                          for p, r in zip(prompts, responses)],
            "num_prompt_tokens": prompts.tolist(), "num_response_tokens": responses.tolist(),
            "num_masked_tail": [0] * n, "truncated": [False] * n}
    pq.write_table(pa.table(rows, schema=EXAMPLES_SCHEMA), out_dir / "part-00000.parquet")
    return out_dir
