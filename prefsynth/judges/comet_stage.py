"""COMET in the pipeline: translated prompts (a quality gate after translation) and translated
completions (a judge column). Both hand segments to one `CometScorer`, the isolated worker in
.venv-comet that loads the model once for the whole stage (judges/comet.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import schemas
from prefsynth.config import CometJudge, TranslationQuality
from prefsynth.stages import Op, ShardInput, ShardOutput

PROMPT_SCORE = "mt_comet"


def _scorer(model: Any) -> Any:
    from prefsynth.judges.comet import CometScorer

    return CometScorer(model.model, batch_size=model.batch_size, device=model.device)


def _scores(scorer: Any, src: list, mt: list, rows: np.ndarray, n: int) -> np.ndarray:
    """COMET scores for `rows` (src/mt pairs), NaN elsewhere."""
    scores = np.full(n, np.nan)
    if len(rows):
        scores[rows] = scorer.score([{"src": src[i], "mt": mt[i]} for i in rows])
    return scores


class TranslationQualityScore(Op):
    """Scores translated prompts (origin == translated) and drops those under min_score; the
    prompt set that leaves this stage is what generators see."""

    uses_model = True

    def __init__(self, quality: TranslationQuality):
        self.quality = quality

    def config(self) -> dict:
        return {"quality": self.quality.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "TranslationQualityScore":
        return cls(TranslationQuality.model_validate(config["quality"]))

    def load(self) -> Any:
        return _scorer(self.quality)

    def process(self, scorer: Any, shard: ShardInput) -> ShardOutput:
        prompts = shard.prompts
        translated = np.flatnonzero(pc.fill_null(pc.equal(prompts["origin"], "translated"), False).to_numpy(zero_copy_only=False))
        scores = _scores(scorer, prompts["src"].to_pylist(), prompts["mt"].to_pylist(), translated, prompts.num_rows)
        table = prompts.append_column(PROMPT_SCORE, pa.array(scores, pa.float64(), mask=np.isnan(scores)))
        threshold = self.quality.min_score
        if threshold is None:
            return ShardOutput(table, None, {"scored": len(translated)})
        low = np.zeros(prompts.num_rows, dtype=bool)
        low[translated] = scores[translated] < threshold
        dropped = table.filter(pa.array(low))
        rejects = schemas.rejects_table([
            {"stage": "translate_quality", "prompt_id": pid, "reason": f"comet_below:{threshold:g}",
             "detail": f"COMET {score:.4f} < {threshold:g} ({self.quality.model}), {src_language} -> {language}"}
            for pid, score, src_language, language in zip(
                dropped["prompt_id"].to_pylist(), dropped[PROMPT_SCORE].to_pylist(),
                dropped["src_language"].to_pylist(), dropped["language"].to_pylist())
        ])
        return ShardOutput(table.filter(pa.array(~low)), rejects, {"scored": len(translated)})


class CometCandidateScore(Op):
    """`{name}_score_raw` for candidates with a `source_text` (translated completions)."""

    uses_model = True

    def __init__(self, judge: CometJudge):
        self.judge = judge

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "CometCandidateScore":
        return cls(CometJudge.model_validate(config["judge"]))

    def load(self) -> Any:
        return _scorer(self.judge)

    def process(self, scorer: Any, shard: ShardInput) -> ShardOutput:
        candidates = shard.table
        rows = np.flatnonzero(pc.is_valid(candidates["source_text"]).to_numpy(zero_copy_only=False))
        scores = _scores(scorer, candidates["source_text"].to_pylist(), candidates["text"].to_pylist(), rows,
                         candidates.num_rows)
        table = candidates.append_column(self.judge.score_column, pa.array(scores, pa.float64(), mask=np.isnan(scores)))
        return ShardOutput(table, None, {"scored": len(rows)})
