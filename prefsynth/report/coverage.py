"""Per-language coverage of a build: prompts in, translated, candidates, language-ID rejections,
kept after all filters, pairs out."""
from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from prefsynth.runs import RunDir

LID_REASONS = ("lid_", "wrong_language:", "script_mismatch:")
COLUMNS = ["language", "prompts_in", "translated", "candidates", "lid_rejected", "kept", "pairs"]


def _read(run: RunDir, stage: str, columns: list[str]) -> pd.DataFrame:
    folder = run.stage(stage).path
    if not folder.is_dir() or not any(folder.glob("shard-*.parquet")):
        return pd.DataFrame(columns=columns)
    return pq.read_table(folder, columns=columns).to_pandas()


def coverage(run: RunDir, *, translated_stage: str | None = None) -> pd.DataFrame:
    """`translated_stage`: the prompt set generators saw (after any translation quality gate)."""
    prompts = _read(run, "prompts", ["language"])
    counts = {"prompts_in": prompts["language"].fillna("und").value_counts()}
    if translated_stage:
        translated = _read(run, translated_stage, ["language", "origin"])
        counts["translated"] = translated[translated["origin"] == "translated"]["language"].value_counts()
    table = pd.DataFrame(counts)  # the union of languages: translation targets need not be source languages
    candidates = _read(run, "filter", ["language", "keep", "reason"])
    language = candidates["language"].fillna("und")
    table["candidates"] = language.value_counts()
    lid = candidates["reason"].fillna("").str.startswith(LID_REASONS)
    table["lid_rejected"] = language[lid].value_counts()
    table["kept"] = language[candidates["keep"].astype(bool)].value_counts()
    pairs = _read(run, "export", ["language"])
    table["pairs"] = pairs["language"].fillna("und").value_counts()
    table = table.reindex(columns=COLUMNS[1:]).fillna(0).astype(int)
    table.index.name = "language"
    return table.sort_values(["prompts_in", "translated", "pairs"], ascending=False).reset_index()


def strategy_diversity(run: RunDir, model: str) -> dict[str, float]:
    """Mean pairwise embedding distance of each prompt's candidates, per generator/strategy."""
    from prefsynth.report.diversity import diversity_by_group

    candidates = _read(run, "filter", ["prompt_id", "text", "generator", "strategy"])
    if candidates.empty:
        return {}
    groups = (candidates["generator"] + "/" + candidates["strategy"]).tolist()
    found = diversity_by_group(candidates["text"].tolist(), groups, candidates["prompt_id"].tolist(), model=model)
    return {group: round(float(value), 4) for group, value in sorted(found.items())}
