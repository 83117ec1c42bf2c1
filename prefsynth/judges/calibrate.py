"""Score calibration across prompts and languages, and judge ensembles.

A reward model that likes English gives English answers higher raw scores; a selector comparing
raw scores across prompts or languages then prefers English. Normalising within a prompt
(`prompt_z`) or within a language (`language_z`, `language_rank`) removes that offset. The raw
column always stays; each normalisation adds a column.

Per-language statistics need every shard: the stage's `fit` sees the score and language columns
of all shards before any shard is processed (cheap: three columns), so the result does not
depend on how prompts were sharded, and a resumed stage computes the same numbers.

An ensemble combines several judges' columns (normalised first, by default within the prompt:
a reward model's logits and a 1-10 judge score are not on one scale) by weighted mean or median,
and keeps the variance across judges and how many judges scored each candidate.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa

from prefsynth.config import Calibration, Ensemble
from prefsynth.stages import Op, ShardInput, ShardOutput


def _z(values: pd.Series, groups: pd.Series) -> pd.Series:
    grouped = values.groupby(groups, dropna=False)
    mean, std = grouped.transform("mean"), grouped.transform("std", ddof=0)
    # one candidate, or all equal: no spread to normalise by; they sit at the centre
    return ((values - mean) / std.where(std > 0)).where(std > 0, 0.0).where(values.notna())


def prompt_z(values: pd.Series, prompt_ids: pd.Series) -> pd.Series:
    """z-score within each prompt's candidates (population std); null stays null."""
    return _z(values, prompt_ids)


def language_stats(values: pd.Series, languages: pd.Series) -> dict[str, dict]:
    """Per language: mean, population std, and the sorted scores (for ranks)."""
    stats = {}
    for code, group in values.groupby(languages.fillna(""), dropna=False):
        scored = group.dropna().to_numpy(dtype=float)
        stats[code] = {"mean": float(scored.mean()) if len(scored) else 0.0,
                       "std": float(scored.std()) if len(scored) else 0.0,
                       "sorted": np.sort(scored).tolist()}
    return stats


def language_z(values: pd.Series, languages: pd.Series, stats: dict[str, dict]) -> pd.Series:
    codes = languages.fillna("")
    mean = codes.map({code: s["mean"] for code, s in stats.items()}).astype(float)  # unseen language: NaN
    std = codes.map({code: s["std"] for code, s in stats.items()}).astype(float).fillna(0.0)
    return ((values - mean) / std.where(std > 0)).where(std > 0, 0.0).where(values.notna())


def language_rank(values: pd.Series, languages: pd.Series, stats: dict[str, dict]) -> pd.Series:
    """Percentile rank in [0, 1] among the language's scored candidates (ties share the mean rank)."""
    out = pd.Series(np.nan, index=values.index)
    codes = languages.fillna("")
    for code in codes.unique():
        rows = (codes == code) & values.notna()
        reference = np.asarray(stats.get(code, {}).get("sorted", []), dtype=float)
        if not rows.any() or len(reference) == 0:
            continue
        x = values[rows].to_numpy(dtype=float)
        below = np.searchsorted(reference, x, side="left")
        equal = np.searchsorted(reference, x, side="right") - below
        rank = below + (equal - 1) / 2.0  # 0-based mean rank among ties
        out[rows] = rank / (len(reference) - 1) if len(reference) > 1 else 0.5
    return out


def output_column(column: str, method: str) -> str:
    """rm_score_raw -> rm_score_language_z; other columns get the method appended."""
    stem = column[: -len("_score_raw")] + "_score" if column.endswith("_score_raw") else column
    return f"{stem}_{method}"


class Calibrate(Op):
    """Adds calibrated columns and the ensemble to the candidates; CPU only."""

    def __init__(self, calibration: list[Calibration], ensemble: Ensemble | None):
        self.calibration, self.ensemble = list(calibration), ensemble
        self.stats: dict[str, dict] = {}

    def config(self) -> dict:
        return {"calibration": [c.model_dump(mode="json") for c in self.calibration],
                "ensemble": self.ensemble.model_dump(mode="json") if self.ensemble else None}

    @classmethod
    def from_config(cls, config: dict) -> "Calibrate":
        ensemble = Ensemble.model_validate(config["ensemble"]) if config["ensemble"] else None
        return cls([Calibration.model_validate(c) for c in config["calibration"]], ensemble)

    def _normalisations(self) -> list[tuple[str, str]]:
        pairs = [(c.column, c.method) for c in self.calibration]
        if self.ensemble and self.ensemble.normalize != "none":
            pairs += [(column, self.ensemble.normalize) for column in self.ensemble.columns]
        return list(dict.fromkeys(pairs))

    def fit_columns(self) -> list[str]:
        """Columns `fit` needs from every shard (none when no per-language statistic is used)."""
        columns = [c for c, m in self._normalisations() if m.startswith("language_")]
        return ["language"] + sorted(set(columns)) if columns else []

    def fit(self, table: pa.Table) -> None:
        frame = table.to_pandas()
        self.stats = {column: language_stats(frame[column].astype(float), frame["language"])
                      for column in self.fit_columns()[1:]}

    def normalise(self, frame: pd.DataFrame, column: str, method: str) -> pd.Series:
        values = frame[column].astype(float)
        if method == "prompt_z":
            return prompt_z(values, frame["prompt_id"])
        if method == "language_z":
            return language_z(values, frame["language"], self.stats[column])
        return language_rank(values, frame["language"], self.stats[column])

    def process(self, resource, shard: ShardInput) -> ShardOutput:
        table = shard.table
        needed = {"prompt_id", "language"} | {c for c, _ in self._normalisations()}
        frame = table.select(sorted(needed)).to_pandas()
        normalised = {(c, m): self.normalise(frame, c, m) for c, m in self._normalisations()}
        added: dict[str, pd.Series] = {output_column(c.column, c.method): normalised[(c.column, c.method)] for c in self.calibration}
        if self.ensemble:
            added |= combine(self.ensemble, frame, normalised)
        for name, series in added.items():
            values = series.to_numpy(dtype=float) if series.dtype.kind == "f" else series.to_numpy()
            array = pa.array(values, pa.float64(), mask=np.isnan(values)) if values.dtype.kind == "f" else pa.array(values)
            table = table.drop_columns(name) if name in table.column_names else table
            table = table.append_column(name, array)
        return ShardOutput(table)


def combine(ensemble: Ensemble, frame: pd.DataFrame, normalised: dict) -> dict[str, pd.Series]:
    """Weighted mean or median of the judges' (normalised) scores over the judges that scored the
    candidate; the weighted population variance across them; how many there were."""
    columns = list(ensemble.columns)
    values = np.column_stack([
        (normalised[(c, ensemble.normalize)] if ensemble.normalize != "none" else frame[c].astype(float)).to_numpy(dtype=float)
        for c in columns
    ])
    weights = np.array([ensemble.columns[c] for c in columns], dtype=float)
    present = ~np.isnan(values)
    w = np.where(present, weights, 0.0)
    total = w.sum(axis=1)
    filled = np.where(present, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * filled).sum(axis=1) / total
        variance = (w * (filled - mean[:, None]) ** 2).sum(axis=1) / total
    if ensemble.method == "median":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as they should
            score = np.nanmedian(values, axis=1)
    else:
        score = mean
    count = present.sum(axis=1)
    scored = count > 0
    index = frame.index
    return {
        f"{ensemble.name}_score": pd.Series(np.where(scored, score, np.nan), index=index),
        f"{ensemble.name}_variance": pd.Series(np.where(scored, variance, np.nan), index=index),
        f"{ensemble.name}_judges": pd.Series(count.astype(np.int64), index=index),
    }
