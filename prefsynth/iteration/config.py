"""The iterate config (`prefsynth iterate CONFIG`): a build pipeline run once per round with the
current policy as its first generator, the trainer's options, and how rounds chain.

Validated like build configs (errors name the field and its line); the build and eval files it
names are validated too, before any round starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from prefsynth import config as c
from prefsynth.train.config import REFERENCE_FREE, TrainConfig

SET_BY_ITERATE = ("model", "ref_model", "dataset", "datasets", "output_dir")


class IterateConfig(c.Strict):
    """On-policy rounds: build with the current policy, train on the round's pairs, repeat."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Names the default run directory runs/<name>.")
    build: str = Field(description="The pipeline YAML of every round (relative to this file); its first generator "
                       "is the policy: round 0 samples with its model, round k with round k-1's trained model.")
    rounds: int = Field(ge=1, description="Rounds to run; raising it later computes only the new rounds.")
    train: dict[str, Any] = Field(description="Trainer options (`prefsynth train`'s config) without model, ref_model, "
                                  "dataset(s) and output_dir, which each round sets.")
    prompts_per_round: Literal["all"] | int = Field(
        "all", description="all: every round uses every prompt; a count: disjoint seeded slices of the build's "
        "prompts, one per round (the sources must hold rounds x count).")
    reference: Literal["initial", "previous"] = Field(
        "initial", description="The reference model of round k: the initial policy, or round k-1's (sDPO).")
    replay: Literal["none", "all"] = Field(
        "none", description="none: round k trains on its own pairs; all: on the pairs of rounds 0..k.")
    eval: str | None = Field(None, description="An eval YAML (relative to this file), run after every round: its "
                             "baseline is the initial policy, and the round's policy joins as model `policy`.")
    judge_with_policy: str | None = Field(
        None, description="Name of an llm_judge of the build whose model each round replaces with the round's policy "
        "(self-rewarding: the policy judges its own candidates); null: the build's judges as they are.")
    nproc: int = Field(1, ge=1, description="Training processes on this machine (>1: torchrun with FSDP2).")

    _pipeline: c.PipelineConfig = PrivateAttr()
    _evaluation: Any = PrivateAttr(None)

    @field_validator("build", "eval")
    @classmethod
    def _exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        base = c._base_dir(info)
        path = base / path if not path.is_absolute() and base is not None else path
        if not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist")
        return str(path.resolve())

    @field_validator("prompts_per_round")
    @classmethod
    def _count(cls, value):
        if value != "all" and value < 1:
            raise ValueError("give `all` or a count >= 1")
        return value

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict) -> dict:
        fixed = [key for key in SET_BY_ITERATE if key in value]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} are set by each round: drop them from `train`")
        TrainConfig.model_validate({**value, "model": "policy", "dataset": "pairs", "output_dir": "train"})
        return value

    @model_validator(mode="after")
    def _load_files(self) -> "IterateConfig":
        self._pipeline = c.load(self.build)
        if self._pipeline.generators[0].strategy != "in_language":
            raise ValueError(f"{self.build}: the policy (first generator) must sample in_language")
        if self.judge_with_policy is not None:
            judges = [j.name for j in self._pipeline.judges if j.type == "llm_judge"]
            if self.judge_with_policy not in judges:
                raise ValueError(f"judge_with_policy {self.judge_with_policy!r} is not an llm_judge of {self.build} "
                                 f"(its llm_judges: {judges or 'none'})")
        if self.eval is not None:
            from prefsynth.eval import config as eval_config

            self._evaluation = eval_config.load(self.eval)
        if self.train.get("lora") and self.reference == "initial" and self.rounds > 1 and self.uses_reference:
            raise ValueError("with lora each round's reference is the base it trains on (the previous policy): "
                             "set `reference: previous`")
        return self

    @property
    def pipeline(self) -> c.PipelineConfig:
        return self._pipeline

    @property
    def evaluation(self):
        """The eval config, or None."""
        return self._evaluation

    @property
    def initial_policy(self) -> str:
        return self._pipeline.generators[0].model

    @property
    def uses_reference(self) -> bool:
        return self.train.get("loss", "sigmoid") not in REFERENCE_FREE


def load(path: str | Path) -> IterateConfig:
    return c.load(path, schema=IterateConfig)


def parse(data: dict, base_dir: Path | None = None) -> IterateConfig:
    return c.parse(data, base_dir=base_dir or Path.cwd(), schema=IterateConfig)
