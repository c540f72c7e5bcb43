"""Where and how work runs: the Ray session, GPU counts for ``auto``, hardware facts, caches, logging."""
