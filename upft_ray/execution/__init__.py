"""Exactly-once chunked execution on engine pools: attempts, first-commit-wins, poison-row isolation,
speculative re-issue of stragglers, and the Ray Data driver; sampling and evaluation run on it."""
