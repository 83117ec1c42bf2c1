"""What the build report needs from a run's Parquet, read column by column in record batches:
per-language score histograms, the language-ID confusion counts, margin and length summaries and a
seeded sample of pairs for the scatter. Memory stays bounded by one batch and the summaries
(languages x bins), not by the run's size: a million candidates read like a thousand.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BINS = 20  # per-language score histogram
MARGIN_BINS = 30
BATCH_ROWS = 65_536
SCATTER_SAMPLE = 5_000  # pairs drawn for the length scatter; its share line uses every pair
UNKNOWN_LANGUAGE, NO_LABEL = "und", "none"


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def columns_of(files: list[Path]) -> set[str]:
    return set(pq.read_schema(files[0]).names) if files else set()


def batches(files: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Only `columns`, batch by batch; a file without one of them (an older run) yields nulls."""
    for path in files:
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
            for missing in (c for c in columns if c not in present):
                batch = batch.append_column(missing, pa.nulls(len(batch)))
            yield batch.select(columns)


def _labels(array: pa.Array, fill: str) -> pa.Array:
    return pc.fill_null(array.cast(pa.string()), fill)


def _floats(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


@dataclass
class ScoreHistograms:
    """Per language: candidates' score histogram, the selected chosen and rejected answers' scores on
    the same bins, and the candidates' mean and standard deviation (population, as mu +- 2 sigma uses)."""
    languages: list[str]
    edges: np.ndarray  # (languages, BINS + 1)
    candidates: np.ndarray  # (languages, BINS)
    chosen: np.ndarray
    rejected: np.ndarray
    mean: np.ndarray
    std: np.ndarray


class _Ranges:
    """min, max, count, sum and sum of squares per language, accumulated over batches."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, language: pa.Array, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if finite.any():
            frame = pd.DataFrame({"language": language.to_numpy(zero_copy_only=False)[finite], "x": values[finite]})
            frame["x2"] = frame["x"] ** 2
            self.parts.append(frame.groupby("language").agg(lo=("x", "min"), hi=("x", "max"), n=("x", "size"),
                                                            s=("x", "sum"), s2=("x2", "sum")))
            if len(self.parts) > 64:  # keep the partial summaries few
                self.parts = [self.total()]

    def total(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(columns=["lo", "hi", "n", "s", "s2"], dtype=float)
        joined = pd.concat(self.parts).groupby(level=0)
        return pd.DataFrame({"lo": joined["lo"].min(), "hi": joined["hi"].max(), "n": joined["n"].sum(),
                             "s": joined["s"].sum(), "s2": joined["s2"].sum()})


def _bin(edges: np.ndarray, rows: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each value on its own row's edges (the last edge inclusive, like np.histogram)."""
    lo, hi = edges[rows, 0], edges[rows, -1]
    width = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(((values - lo) / width * bins).astype(np.int64), 0, bins - 1)


def score_histograms(candidate_files: list[Path], pair_files: list[Path], score: str) -> ScoreHistograms | None:
    """Two passes over the score column (ranges, then counts), vectorised per batch."""
    if score not in columns_of(candidate_files):
        return None
    candidates, chosen, rejected = _Ranges(), _Ranges(), _Ranges()
    for batch in batches(candidate_files, ["language", score]):
        candidates.add(_labels(batch.column(0), UNKNOWN_LANGUAGE), _floats(batch.column(1)))
    has_scores = {"chosen_score", "rejected_score"} <= columns_of(pair_files)
    for batch in batches(pair_files, ["language", "chosen_score", "rejected_score"]) if has_scores else ():
        language = _labels(batch.column(0), UNKNOWN_LANGUAGE)
        chosen.add(language, _floats(batch.column(1)))
        rejected.add(language, _floats(batch.column(2)))
    seen = candidates.total()
    if seen.empty:
        return None
    spans = pd.concat([seen[["lo", "hi"]], chosen.total()[["lo", "hi"]], rejected.total()[["lo", "hi"]]])
    spans = spans.groupby(level=0).agg(lo=("lo", "min"), hi=("hi", "max")).loc[seen.index]
    languages = [str(code) for code in seen.index]
    edges = np.linspace(spans["lo"].to_numpy(), spans["hi"].to_numpy(), BINS + 1, axis=1)
    row_of = {code: row for row, code in enumerate(languages)}
    counts = {name: np.zeros((len(languages), BINS), np.int64) for name in ("candidates", "chosen", "rejected")}

    def count(into: np.ndarray, language: pa.Array, values: np.ndarray) -> None:
        rows = pd.Series(language.to_numpy(zero_copy_only=False)).map(row_of).to_numpy(float)
        usable = np.isfinite(values) & np.isfinite(rows)
        rows, values = rows[usable].astype(np.int64), values[usable]
        flat = rows * BINS + _bin(edges, rows, values, BINS)
        into += np.bincount(flat, minlength=into.size).reshape(into.shape)

    for batch in batches(candidate_files, ["language", score]):
        count(counts["candidates"], _labels(batch.column(0), UNKNOWN_LANGUAGE), _floats(batch.column(1)))
    for batch in batches(pair_files, ["language", "chosen_score", "rejected_score"]) if has_scores else ():
        language = _labels(batch.column(0), UNKNOWN_LANGUAGE)
        count(counts["chosen"], language, _floats(batch.column(1)))
        count(counts["rejected"], language, _floats(batch.column(2)))
    n = seen["n"].to_numpy(float)
    mean = seen["s"].to_numpy() / n
    std = np.sqrt(np.maximum(seen["s2"].to_numpy() / n - mean**2, 0.0))
    return ScoreHistograms(languages, edges, counts["candidates"], counts["chosen"], counts["rejected"], mean, std)


def confusion_counts(candidate_files: list[Path]) -> pd.DataFrame | None:
    """Prompt language x detected label, every label, counted batch by batch."""
    if "lid_lang" not in columns_of(candidate_files):
        return None
    parts = []
    for batch in batches(candidate_files, ["language", "lid_lang"]):
        table = pa.table({"language": _labels(batch.column(0), UNKNOWN_LANGUAGE),
                          "lid_lang": _labels(batch.column(1), NO_LABEL)})
        parts.append(table.group_by(["language", "lid_lang"]).aggregate([([], "count_all")]).to_pandas())
    counts = pd.concat(parts).groupby(["language", "lid_lang"])["count_all"].sum()
    table = counts.unstack(fill_value=0).astype(np.int64)
    table.index.name, table.columns.name = "language", "lid_lang"
    return table


@dataclass
class PairSummary:
    count: int
    margin_edges: np.ndarray | None
    margin_counts: np.ndarray | None
    chosen_longer: float | None  # share of pairs whose chosen answer has more tokens
    sample: pd.DataFrame  # up to SCATTER_SAMPLE pairs' chosen_tokens / rejected_tokens, seeded


def pair_summary(pair_files: list[Path], seed: int = 0) -> PairSummary:
    names = columns_of(pair_files)
    total = sum(pq.read_metadata(path).num_rows for path in pair_files)
    edges = counts = None
    if "margin" in names:
        lo, hi = np.inf, -np.inf
        for batch in batches(pair_files, ["margin"]):
            values = _floats(batch.column(0))
            values = values[np.isfinite(values)]
            if len(values):
                lo, hi = min(lo, values.min()), max(hi, values.max())
        if np.isfinite(lo):
            edges = np.linspace(lo, hi if hi > lo else lo + 1, MARGIN_BINS + 1)
            counts = np.zeros(MARGIN_BINS, np.int64)
            for batch in batches(pair_files, ["margin"]):
                counts += np.histogram(_floats(batch.column(0)), bins=edges)[0]
    longer, compared, sample = 0, 0, []
    if {"chosen_tokens", "rejected_tokens"} <= names and total:
        rng = np.random.default_rng(seed)
        keep = min(1.0, SCATTER_SAMPLE / total)
        for batch in batches(pair_files, ["chosen_tokens", "rejected_tokens"]):
            chosen, rejected = _floats(batch.column(0)), _floats(batch.column(1))
            both = np.isfinite(chosen) & np.isfinite(rejected)
            longer += int((chosen[both] > rejected[both]).sum())
            compared += int(both.sum())
            drawn = both & (rng.random(len(batch)) < keep)
            sample.append(pd.DataFrame({"chosen_tokens": chosen[drawn], "rejected_tokens": rejected[drawn]}))
    frame = pd.concat(sample, ignore_index=True) if sample else pd.DataFrame(columns=["chosen_tokens", "rejected_tokens"])
    return PairSummary(total, edges, counts, longer / compared if compared else None, frame)
