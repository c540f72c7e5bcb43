"""Running stages: the leased stage entry points, the pipeline, sweeps and the checks before Ray starts."""
