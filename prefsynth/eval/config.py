"""The eval config (`prefsynth eval CONFIG`): prompts like a build's, two or more models answering
them, a baseline, and judges comparing each model's answer with the baseline's.

Validated by the same pydantic machinery as build configs (errors name the field and the line);
the README's config reference includes these models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prefsynth import config as c


class EvalModel(c.Generator):
    """A model under evaluation: a generator (vLLM) that answers every eval prompt. `model` may be
    a `prefsynth train` output: a full model folder, or a LoRA adapter (merged into its base model
    for vLLM, cached). Defaults: greedy decoding, one answer per prompt."""

    strategy: Literal["in_language"] = Field("in_language", description="Eval answers are in-language samples.")
    n: int = Field(1, ge=1, description="Answers per prompt. Comparison i of a prompt pairs answer i mod n with the "
                   "baseline's answer i mod its n (several samples all meet a greedy baseline's one answer).")
    temperature: float = Field(0.0, ge=0, description="0: greedy decoding.")


class EvalRewardJudge(c.RewardModelJudge):
    """A reward model scores every answer; the model wins a prompt when score(model) - score(baseline)
    > tie_margin, loses when it is < -tie_margin, else ties."""

    tie_margin: float = Field(0.0, ge=0, description="Score differences within +-tie_margin are ties.")


class EvalLlmJudge(c.LlmJudge):
    """An LLM judge comparing the two answers, asked in both orders (model as A, then as B). Both
    orders name the same winner: a win or loss; they disagree: a tie, counted as a position
    inconsistency; an unreadable verdict: a judge_error, left out of the win-rate and counted."""

    mode: Literal["pointwise", "pairwise"] = Field("pairwise", description="Must be pairwise for eval.")

    @field_validator("mode")
    @classmethod
    def _pairwise(cls, value: str) -> str:
        if value != "pairwise":
            raise ValueError("eval compares two answers: an llm_judge needs mode pairwise")
        return value


EvalJudge = Annotated[Union[EvalRewardJudge, EvalLlmJudge], Field(discriminator="type")]


class AnswerLanguage(c.LanguageIdFilter):
    """How each answer's language is checked (prefsynth.langid, the build's language_id rule).
    Too-short answers cannot be judged and count as in-language by default."""

    type: Literal["language_id"] = Field("language_id", description="The build's language_id rule.")
    on_too_short: Literal["drop", "keep"] = Field("keep", description="keep: too short to tell counts as in-language.")


class Decontaminate(c.Strict):
    """Leave out eval prompts that share a word n-gram with a training prompt (character n-grams
    for scripts written without spaces), recorded as rejects `contaminated` with the training
    prompt's id."""

    against: list[str] = Field(
        min_length=1, description="Training data: run directories, dataset folders, or Parquet/JSONL files with a "
        "`prompt` (text or messages) or `messages` column; relative to the config file.",
    )
    ngram: int = Field(13, ge=1, description="n-gram length (13 words, as GPT-3 and Llama decontamination use).")

    @field_validator("against")
    @classmethod
    def _exist(cls, value: list[str], info: ValidationInfo) -> list[str]:
        base = c._base_dir(info)
        resolved = []
        for item in value:
            path = Path(item).expanduser()
            path = base / path if not path.is_absolute() and base is not None else path
            if not path.exists():
                raise ValueError(f"{str(path)!r} does not exist")
            resolved.append(str(path.resolve()))
        return resolved


class EvalConfig(c.Strict):
    """An evaluation: per-language win-rates of every model against the baseline."""

    name: str = Field(description="Eval name (recorded in the manifest).")
    seed: int = Field(0, description="Seed of sampling (when temperature > 0) and of the bootstrap.")
    shard_size: int = Field(64, ge=1, description="Prompts per shard: the unit of resume.")
    max_shards_in_flight: c.ShardsInFlight = 2
    sources: list[c.Source] = Field(min_length=1, description="Exactly a build's `sources`.")
    translate: c.Translate | None = Field(None, description="Translate an English eval set into per-language sets.")
    languages: list[str] | None = Field(None, description="Evaluate only prompts in these languages; null: all.")
    limit_per_language: int | None = Field(
        None, ge=1, description="At most this many prompts per language (seeded sample, before translation).")
    decontaminate: Decontaminate | None = Field(None, description="Drop prompts overlapping training data (optional).")
    models: list[EvalModel] = Field(description="Two or more models (one is the baseline).")
    baseline: str = Field(description="Name of the model every other model is compared with.")
    judge: list[EvalJudge] = Field(
        description="One judge, or a list; each gets its own statistics, the first is the headline.")
    wrong_language: Literal["lose", "ignore"] = Field(
        "lose", description="lose: an answer in the wrong language loses to one in the prompt's language (both "
        "wrong: the judge decides); ignore: only the judge decides.",
    )
    language_id: AnswerLanguage = Field(default_factory=AnswerLanguage)
    bootstrap: int = Field(1000, ge=10, description="Bootstrap resamples of the prompts for every CI.")
    executor: c.Executor = Field(
        default_factory=c.LocalExecutor, description="Where stages run: local (default) or ray, as in build.")

    @field_validator("judge", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, dict) else value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str] | None) -> list[str] | None:
        for code in value or []:
            c._check_language(code)
        return value

    @model_validator(mode="after")
    def _models_and_judges(self) -> "EvalConfig":
        names = [model.name for model in self.models]
        if len(names) < 2:
            raise ValueError("models: an eval needs two or more models (the baseline and at least one to compare)")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"models: names must be unique; repeated: {duplicated}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the models {names}")
        judges = [judge.name for judge in self.judge]
        if not judges:
            raise ValueError("judge: give at least one judge")
        if len(set(judges)) != len(judges):
            raise ValueError(f"judge names must be unique; have {judges} (set `name:`)")
        if self.languages is not None:
            for model in self.models:
                if model.languages is None:
                    model.languages = list(self.languages)
        return self

    # Read by the build's prompts stage (Pipeline._prompts), which eval reuses.
    @property
    def balance(self) -> c.Balance | None:
        return c.Balance(per_language=self.limit_per_language) if self.limit_per_language else None

    @property
    def others(self) -> list[EvalModel]:
        return [model for model in self.models if model.name != self.baseline]


def load(path: str | Path) -> EvalConfig:
    return c.load(path, schema=EvalConfig)


def parse(data: dict, base_dir: Path | None = None) -> EvalConfig:
    return c.parse(data, base_dir=base_dir or Path.cwd(), schema=EvalConfig)
