"""The training config (YAML for `prefsynth train`, or a dict / TrainConfig from Python)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from prefsynth.config import Strict

PAIR_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "cdpo", "sigmoid_nll", "ln_dpo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


class LoraOptions(Strict):
    """A LoRA adapter (peft) instead of full fine-tuning; the reference is the base model."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = Field("all-linear", description="Module names, or all-linear.")


class TrainConfig(Strict):
    """DPO-family training on an exported prefsynth dataset."""

    model: str = Field(description="Policy: Hub id, local folder or fixture:NAME.")
    ref_model: str | None = Field(None, description="Reference model; null: a frozen copy of `model`.")
    dataset: str = Field(description="Exported Parquet file or folder, a dataset folder, or a run directory.")
    loss: Literal[
        "sigmoid", "ipo", "hinge", "robust", "cdpo", "sigmoid_nll", "ln_dpo", "simpo", "orpo", "group_contrastive"
    ] = Field("sigmoid", description="sigmoid = DPO; group_contrastive trains on list-wise (AMPO/MPO) datasets.")
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust / cdpo: assumed share of flipped labels.")
    rpo_alpha: float = Field(1.0, ge=0, description="sigmoid_nll: weight of the chosen answer's NLL.")
    simpo_gamma: float = Field(0.5, description="simpo: target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term.")
    learning_rate: float = Field(1e-6, gt=0)
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
        "auto", description="Attention kernel for packed sequences; auto: flash-attention varlen on a GPU when the "
        "flash_attn package is installed, else SDPA with the block-diagonal mask transformers builds from position ids.",
    )
    logprob_chunk: int = Field(1024, ge=1, description="Completion tokens per log-prob chunk (never full logits).")
    lora: LoraOptions | None = Field(None, description="Train a LoRA adapter (peft); saved alone in output_dir/model.")
    checkpoint_every: int | None = Field(None, ge=1, description="Save a resumable checkpoint every N steps.")
    output_dir: str = Field(description="metrics.jsonl, checkpoints and the trained model.")

    @model_validator(mode="after")
    def _lists(self) -> "TrainConfig":
        if self.lora is not None and self.ref_model is not None:
            raise ValueError("with lora the reference is the base model: drop ref_model")
        if self.loss in REFERENCE_FREE and self.ref_model is not None:
            raise ValueError(f"loss {self.loss} is reference-free: drop ref_model")
        if self.batch_size % self.gradient_accumulation:
            raise ValueError("batch_size must be a multiple of gradient_accumulation")
        return self

    @property
    def uses_reference(self) -> bool:
        return self.loss not in REFERENCE_FREE


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("dataset", "output_dir"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return TrainConfig.model_validate(data)
