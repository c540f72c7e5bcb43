"""Stage 1: sample prefixes (and the structure-tuning share of full solutions) with vLLM on Ray Data."""
