"""prefsynth: multilingual preference datasets (prompts -> generate -> judge -> select -> export)."""
from prefsynth.config import ConfigError, PipelineConfig
from prefsynth.pipeline import BuildResult, Pipeline

__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineConfig", "BuildResult", "ConfigError", "__version__"]
