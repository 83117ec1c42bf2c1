"""Candidates grouped by prompt: the common ground of every selector.

`prepare` validates the input, keeps the usable candidates (`keep` not false, score finite), counts
a duplicate text within a prompt once (the lowest candidate_id stays), and lays the rows out in
canonical order: grouped by prompt (prompts in order of first appearance), within a prompt by
candidate_id. Prompts that cannot give a preference (no candidates, fewer than two usable, all
usable scores equal) are dropped here with a reason, so every method sees groups of two or more
rows with spread, contiguous, which turns per-prompt work into numpy segment reductions.

Ties in any ranking are broken by the lowest candidate_id, or by a seeded random order
(`ties="random"`); see keys.py for why the random draws do not depend on row order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import schemas
from prefsynth.select import keys as rnd

TIE_STREAM = 1  # random stream numbers: one per use, so draws never correlate across uses
MAX_INT = np.iinfo(np.int64).max


def as_table(candidates) -> pa.Table:
    if isinstance(candidates, pa.Table):
        return candidates
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(candidates, pd.DataFrame):
        return pa.Table.from_pandas(candidates, preserve_index=False)
    raise TypeError(f"candidates must be a pyarrow Table or a pandas DataFrame, got {type(candidates).__name__}")


def _column(table: pa.Table, name: str, kind: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ValueError(f"candidates have no column {name!r} (columns: {', '.join(table.column_names)})")
    column = table[name]
    if kind == "string":
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            column = column.cast(pa.string())
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise ValueError(f"candidates row {row}: {name!r} is null")
        return column
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
        raise ValueError(f"score column {name!r} must be numeric, got {column.type}")
    return column.cast(pa.float64())


@dataclass
class Groups:
    """Usable candidates of the prompts that can give a preference, in canonical order.

    Arrays of length N (rows): codes (group of each row), candidate_ids, score, tie (global tie
    order, lower wins; a permutation of range(N) that keeps each group within its own slots),
    id_rank (rank of the candidate_id among all of its prompt's rows, for random keys), rows
    (index into the input table). Arrays of length G: prompt_ids, starts, counts.
    """

    prompt_ids: pa.Array
    starts: np.ndarray
    counts: np.ndarray
    codes: np.ndarray
    candidate_ids: pa.Array
    score: np.ndarray
    tie: np.ndarray
    id_rank: np.ndarray
    rows: np.ndarray
    seed: int
    table: pa.Table = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.starts)

    @cached_property
    def row_of_tie(self) -> np.ndarray:
        return np.argsort(self.tie, kind="stable")

    @cached_property
    def prompt_hash(self) -> np.ndarray:
        return rnd.hash_strings(self.prompt_ids)

    def keys(self, stream: int) -> np.ndarray:
        return rnd.candidate_keys(self.prompt_hash[self.codes], self.id_rank, self.seed, stream)

    @cached_property
    def mean(self) -> np.ndarray:
        # bincount adds in row order, like a plain left-to-right loop: the reference agrees bit for bit
        return np.bincount(self.codes, weights=self.score, minlength=self.size) / self.counts

    @cached_property
    def std(self) -> np.ndarray:
        deviation = self.score - self.mean[self.codes]
        return np.sqrt(np.bincount(self.codes, weights=deviation * deviation, minlength=self.size) / self.counts)

    def segment_min(self, values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values, self.starts)

    def segment_max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, self.starts)

    def segment_sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts)

    def position(self) -> np.ndarray:
        """Each row's position within its group (canonical order)."""
        return np.arange(len(self.codes)) - self.starts[self.codes]

    def first(self, mask: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Per group, the row with the smallest `key` among `mask` rows, ties by tie order; -1
        where no row is in the mask."""
        masked = np.where(mask, key, np.inf)
        best = self.segment_min(masked)
        contenders = mask & (masked == best[self.codes])
        tie = self.segment_min(np.where(contenders, self.tie, MAX_INT))
        return np.where(tie == MAX_INT, -1, self.row_of_tie[np.minimum(tie, len(self.tie) - 1)])

    def embeddings(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Embeddings of some rows as a float64 matrix; a clear error for a missing or ragged one."""
        if column not in self.table.column_names:
            raise ValueError(
                f"candidates have no embedding column {column!r}: add an `embedding` judge to the pipeline "
                "or pass an `embedding` column (a list of floats per candidate)"
            )
        values = self.table[column].take(pa.array(self.rows[rows]))
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        width = int(lengths.max()) if len(lengths) else 0
        bad = np.flatnonzero(lengths != width) if width else np.arange(min(len(lengths), 1))
        if len(bad):
            row = int(rows[bad[0]])
            raise ValueError(
                f"candidate {self.candidate_ids[row].as_py()!r}: {column!r} is missing or has {lengths[bad[0]]} values "
                f"where others have {width}"
            )
        flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float64)
        matrix = flat.reshape(len(values), -1)
        if not np.isfinite(matrix).all():
            row = int(rows[np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0]])
            raise ValueError(f"candidate {self.candidate_ids[row].as_py()!r}: {column!r} has a non-finite value")
        return matrix


@dataclass
class Prepared:
    groups: Groups
    dropped: pa.Table  # prompt_id, reason, detail


def dropped_table(prompt_ids, reasons, details) -> pa.Table:
    return pa.table(
        {"prompt_id": pa.array(prompt_ids, pa.string()), "reason": pa.array(reasons, pa.string()),
         "detail": pa.array(details, pa.string())},
        schema=schemas.DROPPED,
    )


def prepare(candidates, score: str, *, seed: int = 0, ties: str = "lowest_id", prompt_ids=None) -> Prepared:
    table = as_table(candidates)
    prompt_col = _column(table, "prompt_id", "string")
    id_col = _column(table, "candidate_id", "string")
    scores = _column(table, score, "float").to_numpy(zero_copy_only=False)

    # prompt codes: given prompts first (in their order), then any others in order of appearance
    if prompt_ids is not None:
        universe = pa.array(list(prompt_ids), pa.string())
        encoded = pc.index_in(prompt_col, value_set=universe).to_numpy(zero_copy_only=False)
        if len(encoded) and np.isnan(encoded.astype(float)).any():
            row = int(np.flatnonzero(np.isnan(encoded.astype(float)))[0])
            raise ValueError(f"candidates row {row}: prompt_id {prompt_col[row].as_py()!r} is not among the prompts given")
        codes_in = encoded.astype(np.int64)
    else:
        encoded = pc.dictionary_encode(prompt_col).combine_chunks() if table.num_rows else None
        universe = encoded.dictionary if encoded is not None else pa.array([], pa.string())
        codes_in = encoded.indices.to_numpy().astype(np.int64) if encoded is not None else np.zeros(0, np.int64)
    n_prompts = len(universe)

    order = pc.sort_indices(
        pa.table({"code": codes_in, "id": id_col}), sort_keys=[("code", "ascending"), ("id", "ascending")]
    ).to_numpy()
    codes = codes_in[order]
    ids = id_col.take(order)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(codes) > 1:
        same = (codes[1:] == codes[:-1]) & pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
        if same.any():
            row = int(np.flatnonzero(same)[0]) + 1
            raise ValueError(
                f"candidate_id {ids[row].as_py()!r} appears twice for prompt {universe[codes[row]].as_py()!r}"
            )
    total = np.bincount(codes, minlength=n_prompts)
    starts_all = np.cumsum(total) - total
    id_rank = np.arange(len(codes)) - starts_all[codes]
    score_sorted = scores[order]

    if "keep" in table.column_names:
        keep = pc.fill_null(table["keep"].cast(pa.bool_()), True).to_numpy(zero_copy_only=False)[order]
    else:
        keep = np.ones(len(codes), dtype=bool)
    finite = np.isfinite(score_sorted)
    usable = keep & finite
    duplicate = np.zeros(len(codes), dtype=bool)
    if "text" in table.column_names and usable.any():
        texts = table["text"].take(pa.array(order))
        candidates_at = np.flatnonzero(usable & ~pc.is_null(texts).to_numpy(zero_copy_only=False))
        firsts = (
            pa.table({"code": codes[candidates_at], "text": texts.take(pa.array(candidates_at)), "pos": candidates_at})
            .group_by(["code", "text"], use_threads=False).aggregate([("pos", "min")])["pos_min"].to_numpy()
        )
        duplicate[candidates_at] = True
        duplicate[firsts] = False
        usable &= ~duplicate

    n_usable = np.bincount(codes[usable], minlength=n_prompts)
    lowest = np.full(n_prompts, np.inf)
    highest = np.full(n_prompts, -np.inf)
    np.minimum.at(lowest, codes[usable], score_sorted[usable])
    np.maximum.at(highest, codes[usable], score_sorted[usable])
    ok = (n_usable >= 2) & (highest > lowest)

    filtered = np.bincount(codes[~keep], minlength=n_prompts)
    unscored = np.bincount(codes[keep & ~finite], minlength=n_prompts)
    duplicates = np.bincount(codes[duplicate], minlength=n_prompts)
    dropped = []
    for code in np.flatnonzero(~ok):  # dropped prompts only: strings for people to read
        pid = universe[code].as_py()
        if total[code] == 0:
            dropped.append((pid, "no_candidates", "no candidate for this prompt"))
        elif n_usable[code] < 2:
            why = f"{filtered[code]} filtered out, {unscored[code]} without a score"
            why += f", {duplicates[code]} duplicate texts" if duplicates[code] else ""
            dropped.append((pid, "too_few_candidates", f"{n_usable[code]} usable of {total[code]} ({why})"))
        else:
            dropped.append((pid, "no_spread", f"all {n_usable[code]} usable scores equal {lowest[code]:.6g} (sigma = 0)"))

    selected = usable & ok[codes]
    group_codes = np.flatnonzero(ok & (n_usable >= 2))
    remap = np.full(n_prompts, -1, dtype=np.int64)
    remap[group_codes] = np.arange(len(group_codes))
    row_index = np.flatnonzero(selected)
    g_codes = remap[codes[row_index]]
    counts = n_usable[group_codes].astype(np.int64)
    starts = np.cumsum(counts) - counts
    if ties == "random":
        prompt_hash = rnd.hash_strings(universe.take(pa.array(group_codes))) if len(group_codes) else np.zeros(0, np.uint64)
        keys = rnd.candidate_keys(prompt_hash[g_codes], id_rank[row_index], seed, TIE_STREAM)
        perm = np.argsort((g_codes.astype(np.uint64) << np.uint64(32)) | (keys >> np.uint64(32)), kind="stable")
        tie = np.empty(len(perm), dtype=np.int64)
        tie[perm] = np.arange(len(perm))
    elif ties == "lowest_id":
        tie = np.arange(len(row_index), dtype=np.int64)
    else:
        raise ValueError(f"ties must be 'lowest_id' or 'random', got {ties!r}")
    groups = Groups(
        prompt_ids=universe.take(pa.array(group_codes, pa.int64())),
        starts=starts, counts=counts, codes=g_codes,
        candidate_ids=ids.take(pa.array(row_index, pa.int64())),
        score=score_sorted[row_index], tie=tie, id_rank=id_rank[row_index],
        rows=order[row_index].astype(np.int64), seed=seed, table=table,
    )
    if dropped:
        dropped_ids, reasons, details = zip(*dropped)
    else:
        dropped_ids, reasons, details = [], [], []
    return Prepared(groups, dropped_table(list(dropped_ids), list(reasons), list(details)))
