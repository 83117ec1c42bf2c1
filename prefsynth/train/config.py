"""The training config (YAML for `prefsynth train`, or a dict / TrainConfig from Python)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from prefsynth.config import Strict
from prefsynth.train.sources import Source

PAIR_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "cdpo", "sigmoid_nll", "ln_dpo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


class LoraOptions(Strict):
    """A LoRA adapter (peft) instead of full fine-tuning; the reference is the base model."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = Field("all-linear", description="Module names, or all-linear.")


class DatasetSource(Strict):
    """One training source: a file, folder, prefsynth run, `save_to_disk` folder or Hub dataset name."""

    path: str = Field(description="Parquet/JSONL file or folder, prefsynth run or dataset dir, save_to_disk folder, "
                      "or a Hugging Face dataset name (offline: the local cache).")
    split: str = Field("train", description="Split of a Hub dataset, a DatasetDict folder or a folder of <split>-* files.")
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    weight: float = Field(1.0, gt=0, description="In a mixture: rows taken = weight x the source's rows (seeded; 2 = "
                          "every row twice, 0.5 = a seeded half).")

    def source(self) -> Source:
        return Source(self.path, self.split, self.subset, self.weight)


Reporter = Literal["tensorboard", "wandb", "trackio"]


class TrainConfig(Strict):
    """DPO-family training on any TRL preference dataset (prefsynth exports included)."""

    model: str = Field(description="Policy: Hub id, local folder or fixture:NAME.")
    ref_model: str | None = Field(None, description="Reference model; null: a frozen copy of `model`.")
    dataset: str | DatasetSource | None = Field(
        None, description="Training data: a path or Hub name, or {path, split, subset}; any TRL preference format.")
    datasets: list[DatasetSource] | None = Field(None, description="A mixture instead of `dataset`: [{path, weight}, ...].")
    eval_dataset: str | DatasetSource | None = Field(None, description="Held-out data for eval_* metrics.")
    eval_fraction: float | None = Field(None, gt=0, lt=1, description="Hold out this share of the prompts instead "
                                        "(seeded; all pairs of a prompt on one side).")
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N steps (and after the last); null: after the last.")
    loss: Literal[
        "sigmoid", "ipo", "hinge", "robust", "cdpo", "sigmoid_nll", "ln_dpo", "simpo", "orpo", "group_contrastive"
    ] = Field("sigmoid", description="sigmoid = DPO; group_contrastive trains on list-wise (AMPO/MPO) datasets.")
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust / cdpo: assumed share of flipped labels.")
    rpo_alpha: float = Field(1.0, ge=0, description="sigmoid_nll: weight of the chosen answer's NLL.")
    simpo_gamma: float = Field(0.5, description="simpo: target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term.")
    learning_rate: float = Field(1e-6, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Hugging Face Trainer schedules (TRL's default: linear decay to 0).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps (wins over warmup_ratio when > 0).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up as a share of the total steps.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null: none.")
    batch_size: int = Field(8, ge=1, description="Pairs (or lists) per optimizer step.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per step (batch_size is split across them).")
    micro_batch_tokens: int | None = Field(
        None, ge=1, description="Token budget of one packed micro-batch (replaces gradient_accumulation): a step's "
        "pairs are packed greedily up to this many tokens per forward pass; null: batch_size / gradient_accumulation pairs.",
    )
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; null: `epochs` over the data.")
    epochs: float = Field(1.0, gt=0)
    max_length: int = Field(1024, ge=8, description="Tokens per sequence (prompt + completion), truncated at the end.")
    seed: int = 0
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16: bf16 weights and autocast (GPU).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    gradient_checkpointing: bool = False
    attention: Literal["auto", "sdpa", "flash_attention_2", "flex_attention", "eager"] = Field(
        "auto", description="Attention kernel for packed rows; auto: on a GPU flash-attention varlen when flash_attn is "
        "installed, else flex_attention (a document mask that skips the other sequences' blocks); on the CPU SDPA.",
    )
    logprob_chunk: int = Field(1024, ge=1, description="Completion tokens per log-prob chunk (never full logits).")
    lora: LoraOptions | None = Field(None, description="Train a LoRA adapter (peft); saved alone in output_dir/model.")
    checkpoint_every: int | None = Field(None, ge=1, description="Save a resumable checkpoint every N steps.")
    report_to: list[Reporter] = Field(default_factory=list, description="Also log to tensorboard, wandb or trackio "
                                      "(optional extras: pip install 'prefsynth[wandb]').")
    run_name: str | None = Field(None, description="Run name for report_to; null: output_dir's name.")
    output_dir: str = Field(description="metrics.jsonl, summary.json, checkpoints and the trained model.")

    @model_validator(mode="after")
    def _lists(self) -> "TrainConfig":
        if self.lora is not None and self.ref_model is not None:
            raise ValueError("with lora the reference is the base model: drop ref_model")
        if self.loss in REFERENCE_FREE and self.ref_model is not None:
            raise ValueError(f"loss {self.loss} is reference-free: drop ref_model")
        if (self.dataset is None) == (self.datasets is None):
            raise ValueError("give exactly one of dataset or datasets (a mixture)")
        if self.eval_dataset is not None and self.eval_fraction is not None:
            raise ValueError("give eval_dataset or eval_fraction, not both")
        if self.batch_size % self.gradient_accumulation:
            raise ValueError("batch_size must be a multiple of gradient_accumulation")
        return self

    @property
    def uses_reference(self) -> bool:
        return self.loss not in REFERENCE_FREE

    @property
    def sources(self) -> list[Source]:
        return [d.source() for d in self.datasets] if self.datasets else [_source(self.dataset)]

    @property
    def eval_sources(self) -> list[Source] | None:
        return None if self.eval_dataset is None else [_source(self.eval_dataset)]


def _source(value: str | DatasetSource) -> Source:
    return Source(value) if isinstance(value, str) else value.source()


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    resolve = lambda value: str((path.parent / value).resolve()) if not Path(value).is_absolute() else value  # noqa: E731
    for key in ("dataset", "eval_dataset", "output_dir"):
        if isinstance(data.get(key), str) and (key == "output_dir" or (path.parent / data[key]).exists()):
            data[key] = resolve(data[key])
        elif isinstance(data.get(key), dict) and (path.parent / str(data[key].get("path", ""))).exists():
            data[key]["path"] = resolve(data[key]["path"])
    for entry in data.get("datasets") or []:  # relative paths that exist are the config's; others are Hub names
        if isinstance(entry, dict) and (path.parent / str(entry.get("path", ""))).exists():
            entry["path"] = resolve(entry["path"])
    return TrainConfig.model_validate(data)
