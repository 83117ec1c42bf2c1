"""Do the judges agree, per language?

For each language: the rank correlation (Spearman) between the reward model and each other judge,
computed within each prompt's candidates and averaged over prompts (scores of different prompts
are not comparable), and how often the language-ID filter removed the candidate the reward model
ranked first (a reward model that likes answers in the wrong language shows up here).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from prefsynth.report.coverage import LID_REASONS, _read
from prefsynth.runs import RunDir


def within_prompt_spearman(frame: pd.DataFrame, first: str, second: str) -> pd.Series:
    """Per prompt: Spearman's rho of two score columns over the candidates both scored (NaN where
    fewer than two, or where one column is constant)."""
    both = frame.dropna(subset=[first, second])
    ranks = both.groupby("prompt_id")[[first, second]].rank()
    ranks["prompt_id"] = both["prompt_id"]

    def rho(group: pd.DataFrame) -> float:
        if len(group) < 2 or group[first].nunique() < 2 or group[second].nunique() < 2:
            return np.nan
        return float(np.corrcoef(group[first], group[second])[0, 1])

    return ranks.groupby("prompt_id")[[first, second]].apply(rho)


def agreement(run: RunDir, reward_column: str | None, other_columns: list[str],
              pairwise_judges: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per language: prompts, rm_top_removed_by_lid (share of prompts whose reward-model
    favourite was dropped by language ID), rho:<judge> for each other judge (mean within-prompt
    Spearman) and n:<judge>, how many prompts that mean is over; for pair-wise LLM judges,
    position_disagreement:<judge>, the share of pairs whose two orders got different verdicts."""
    if reward_column is None:
        return pd.DataFrame()
    columns = ["prompt_id", "language", "reason", reward_column] + [c for c in other_columns if c != reward_column]
    counts = [f"{judge}_{kind}" for judge in pairwise_judges for kind in ("comparisons", "disagreements")]
    frame = _read(run, "filter", columns + counts)
    if frame.empty:
        return pd.DataFrame()
    frame["language"] = frame["language"].fillna("und")
    rows = []
    for language, group in frame.groupby("language"):
        row = {"language": language, "prompts": group["prompt_id"].nunique()}
        scored = group.dropna(subset=[reward_column])
        top = scored.loc[scored.groupby("prompt_id")[reward_column].idxmax()]
        removed = top["reason"].fillna("").str.startswith(LID_REASONS)
        row["rm_top_removed_by_lid"] = round(float(removed.mean()), 4) if len(top) else np.nan
        for column in columns[4:]:
            rho = within_prompt_spearman(group, reward_column, column).dropna()
            judge = column.removesuffix("_score_raw")
            row[f"rho:{judge}"] = round(float(rho.mean()), 4) if len(rho) else np.nan
            row[f"n:{judge}"] = int(len(rho))
        for judge in pairwise_judges:  # each pair is counted on both its candidates: the ratio is per pair
            compared = group[f"{judge}_comparisons"].sum()
            row[f"position_disagreement:{judge}"] = round(float(group[f"{judge}_disagreements"].sum() / compared), 4) if compared else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
