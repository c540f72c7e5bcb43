"""Stage 3: greedy evaluation with Ray Data + vLLM, graded on CPU in a separate Ray Data stage."""
