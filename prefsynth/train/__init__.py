"""Bundled DPO-family trainer on exported prefsynth datasets (see trainer.py). torch loads on the
first call to `train`, not on import, so the CLI and config tooling stay light."""
from prefsynth.train.config import LoraOptions, TrainConfig, load_train_config


def train(config, **kwargs):
    """Train on an exported dataset; see prefsynth.train.trainer.train."""
    from prefsynth.train.trainer import train as run

    return run(config, **kwargs)


__all__ = ["LoraOptions", "TrainConfig", "load_train_config", "train"]
