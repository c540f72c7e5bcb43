"""The library API: load a config, run a stage, read a report, prepare the paper's datasets (what the
``upft`` CLI calls).

    from upft_ray.api import load_config, run
    report = run(load_config("configs/quickstart.yaml", ["sample.prefix_tokens=16"]))

Every stage checks its inputs before Ray starts (``ConfigError``, one line per problem), holds its run
directory's lease (``LeaseHeld`` when another attempt does), and resumes from what the directory holds.
"""

from upft_ray.config import ConfigError, PipelineConfig, load_config
from upft_ray.io.lease import LeaseError, LeaseHeld
from upft_ray.io.prepare import prepare_public_set
from upft_ray.orchestration.stages import (
                                           EOS_QUESTIONS,
                                           analyze_collapse,
                                           analyze_consistency,
                                           analyze_rollouts,
                                           evaluate,
                                           exit_code,
                                           run,
                                           sample,
                                           sweep,
                                           train,
)
from upft_ray.reporting.report import write_comparison, write_report
from upft_ray.runtime.logs import configure_logging

__all__ = ["EOS_QUESTIONS", "ConfigError", "LeaseError", "LeaseHeld", "PipelineConfig", "analyze_collapse",
           "analyze_consistency", "analyze_rollouts", "configure_logging", "evaluate", "exit_code", "load_config",
           "prepare_public_set", "run", "sample", "sweep", "train", "write_comparison", "write_report"]
