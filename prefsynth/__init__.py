"""prefsynth: multilingual preference datasets (prompts -> generate -> judge -> select -> export).

Top-level names load their modules on first use, so `import prefsynth.train` (or the select
API) does not pull in the whole pipeline and its dependencies."""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineConfig", "BuildResult", "ConfigError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "BuildResult"):
        from prefsynth import pipeline

        return getattr(pipeline, name)
    if name in ("PipelineConfig", "ConfigError"):
        from prefsynth import config

        return getattr(config, name)
    raise AttributeError(f"module 'prefsynth' has no attribute {name!r}")
