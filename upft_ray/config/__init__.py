"""The pipeline's typed config: one pydantic model per stage, composed into a PipelineConfig, loaded
from YAML plus dotted overrides with every problem reported at once (README, "Configuration")."""

from upft_ray.config.errors import ConfigError
from upft_ray.config.loading import config_from_dict, config_to_dict, field_docs, load_config
from upft_ray.config.models import (
                                    MODEL_DEFAULT,
                                    AnalyzeConfig,
                                    EngineConfig,
                                    EvalConfig,
                                    PipelineConfig,
                                    RayConfig,
                                    SampleConfig,
                                    SweepConfig,
                                    SweepVariant,
                                    TrainConfig,
)
from upft_ray.config.overrides import apply_overrides

__all__ = ["MODEL_DEFAULT", "AnalyzeConfig", "ConfigError", "EngineConfig", "EvalConfig", "PipelineConfig",
           "RayConfig", "SampleConfig", "SweepConfig", "SweepVariant", "TrainConfig", "apply_overrides",
           "config_from_dict", "config_to_dict", "field_docs", "load_config"]
