"""prefsynth: multilingual preference datasets (prompts -> generate -> judge -> select -> export).

Top-level names load their modules on first use, so `import prefsynth.train` (or the select
API) does not pull in the whole pipeline and its dependencies."""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "PipelineConfig", "BuildResult", "ConfigError", "evaluate", "iterate", "load", "__version__"]


def load(run_dir, config: str | None = None):
    """A build's dataset as a datasets.DatasetDict (split "train"); `config`: pairs or lists, default the
    one the build exported. Same as datasets.load_dataset(RUN_DIR/dataset[, config])."""
    from pathlib import Path

    import datasets

    folder = Path(run_dir)
    folder = folder / "dataset" if (folder / "dataset").is_dir() else folder
    if config is None:
        config = "lists" if (folder / "data" / "lists").is_dir() else "pairs"
    return datasets.load_dataset(str(folder), config)


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "BuildResult"):
        from prefsynth import pipeline

        return getattr(pipeline, name)
    if name in ("evaluate", "Evaluation", "EvalResult"):
        from prefsynth.eval import run

        return getattr(run, name)
    if name in ("iterate", "IterateResult"):
        from prefsynth.iteration import rounds

        return getattr(rounds, name)
    if name in ("PipelineConfig", "ConfigError"):
        from prefsynth import config

        return getattr(config, name)
    raise AttributeError(f"module 'prefsynth' has no attribute {name!r}")
