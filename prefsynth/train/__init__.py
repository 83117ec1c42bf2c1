"""Bundled DPO-family trainer on exported prefsynth datasets (see trainer.py)."""
from prefsynth.train.config import TrainConfig, load_train_config
from prefsynth.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
