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

import functools
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

    Arrays of length N (rows): codes (group of each row), score, tie (global tie
    order, lower wins; a permutation of range(N) that keeps each group within its own slots),
    id_rank (rank of the candidate_id among all of its prompt's rows, for random keys), rows
    (index into the input table). Arrays of length G: prompt_ids, starts, counts.
    """

    prompt_ids: pa.Array
    starts: np.ndarray
    counts: np.ndarray
    codes: np.ndarray
    ids_in: pa.Array  # the input's candidate_id column (rows index it)
    score: np.ndarray
    tie: np.ndarray
    rows: np.ndarray
    seed: int
    table: pa.Table = field(repr=False)
    sorted_at: np.ndarray = field(repr=False)  # each row's place among all of the input's rows, sorted
    all_starts: np.ndarray = field(repr=False)  # where each input prompt's rows start, in that order
    all_codes: np.ndarray = field(repr=False)
    ordered_ties: bool = True  # tie order = canonical order (ties: lowest_id)

    @cached_property
    def id_rank(self) -> np.ndarray:
        """Rank of each row's candidate_id among all of its prompt's rows (usable or not)."""
        return self.sorted_at - self.all_starts[self.all_codes[self.sorted_at]]

    def candidate_ids(self, rows: np.ndarray) -> pa.Array:
        return self.ids_in.take(pa.array(self.rows[rows], pa.int64()))

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
        return rnd.candidate_keys(rnd.prompt_keys(self.prompt_hash, self.seed, stream)[self.codes], self.id_rank)

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

    def first(self, mask: np.ndarray | None, key: np.ndarray) -> np.ndarray:
        """Per group, the row with the smallest `key` among `mask` rows (None: all rows), ties by
        tie order; -1 where no row is in the mask."""
        masked = key if mask is None else np.where(mask, key, np.inf)
        return self._first_of(masked == self.segment_min(masked)[self.codes], mask)

    def best(self) -> np.ndarray:
        """Per group, the row with the highest score, ties by tie order."""
        return self._first_of(self.score == self.segment_max(self.score)[self.codes], None)

    def _first_of(self, contenders: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if mask is not None:
            contenders &= mask
        tie = self.segment_min(np.where(contenders, self.tie, MAX_INT))
        if self.ordered_ties:  # tie order is row order: the tie is the row
            return np.where(tie == MAX_INT, -1, tie)
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
                f"candidate {self.ids_in[int(self.rows[row])].as_py()!r}: {column!r} is missing or has {lengths[bad[0]]} values "
                f"where others have {width}"
            )
        flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float64)
        matrix = flat.reshape(len(values), -1)
        if not np.isfinite(matrix).all():
            row = int(rows[np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0]])
            raise ValueError(f"candidate {self.ids_in[int(self.rows[row])].as_py()!r}: {column!r} has a non-finite value")
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


ALREADY_SORTED = np.zeros(0, dtype=np.int64)  # a marker: no permutation needed


def _sort_keys(key: np.ndarray) -> np.ndarray | None:
    """argsort of non-negative int keys (ALREADY_SORTED when it is the identity), or None if a key
    repeats. A counting sort when the keys are dense (prompts x a few candidate ids), else numpy's."""
    if len(key) < 2 or (key[1:] > key[:-1]).all():
        return ALREADY_SORTED  # grouped and in id order already, as generation writes candidates
    if key.max() < 4 * len(key) + 1024:
        counts = np.bincount(key)
        if (counts > 1).any():
            return None
        slot = np.cumsum(counts) - 1
        order = np.empty(len(key), dtype=np.int64)
        order[slot[key]] = np.arange(len(key))
        return order
    order = np.argsort(key)
    return None if (key[order[1:]] == key[order[:-1]]).any() else order


def _grouped_runs(prompt_col: pa.Array, ids: pa.Array):
    """The common layout, each prompt's rows contiguous and in candidate_id order, found with a
    few string comparisons. Returns (codes, prompt ids, verdict) where `verdict` is a future
    confirming the layout (prompts not repeated later, ids ascending), checked on a second core
    while the caller goes on (Arrow kernels release the GIL); or None when clearly not grouped."""
    n = len(prompt_col)
    if n < 2:
        return None
    change = pc.not_equal(prompt_col.slice(1), prompt_col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    heads = np.flatnonzero(np.concatenate([[True], change]))
    if 2 * len(heads) > n:
        return None  # mostly single-row runs: shuffled (or one candidate per prompt)
    universe = prompt_col.take(pa.array(heads))

    def confirm() -> bool:
        ascending = pc.greater(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        return bool((ascending | change).all()) and len(pc.unique(universe)) == len(heads)

    return np.repeat(np.arange(len(heads)), np.diff(np.append(heads, n))), universe, _pool().submit(confirm)


@functools.lru_cache(maxsize=1)
def _pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefsynth-select")


def _encode_prompts(prompt_col: pa.Array, prompt_ids) -> tuple[np.ndarray, pa.Array]:
    """Prompt codes: the given prompts (in their order), or prompts in order of first appearance."""
    if prompt_ids is not None:
        universe = pa.array(list(prompt_ids), pa.string())
        encoded = pc.index_in(prompt_col, value_set=universe).to_numpy(zero_copy_only=False)
        if len(encoded) and np.isnan(encoded.astype(float)).any():
            row = int(np.flatnonzero(np.isnan(encoded.astype(float)))[0])
            raise ValueError(f"candidates row {row}: prompt_id {prompt_col[row].as_py()!r} is not among the prompts given")
        return encoded.astype(np.int64), universe
    if not len(prompt_col):
        return np.zeros(0, np.int64), pa.array([], pa.string())
    encoded = pc.dictionary_encode(prompt_col)
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary


def _canonical_order(codes: np.ndarray, ids: pa.Array, universe: pa.Array) -> np.ndarray:
    """Rows grouped by prompt, in candidate_id order within each, with integer sorts only (ids are
    ranked through their dictionary). Raises on a candidate_id repeated within a prompt."""
    encoded = pc.dictionary_encode(ids)
    id_order = np.empty(len(encoded.dictionary), dtype=np.int64)
    id_order[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(id_order))
    key = codes * len(id_order) + id_order[encoded.indices.to_numpy(zero_copy_only=False)]
    order = _sort_keys(key)
    if order is None:
        row = int(np.flatnonzero(np.bincount(key)[key] > 1)[0])
        raise ValueError(f"candidate_id {ids[row].as_py()!r} appears twice for prompt {universe[codes[row]].as_py()!r}")
    return order


def prepare(candidates, score: str, *, seed: int = 0, ties: str = "lowest_id", prompt_ids=None,
            grouped_layout: bool = True) -> Prepared:
    table = as_table(candidates)
    prompt_col = _column(table, "prompt_id", "string")
    id_col = _column(table, "candidate_id", "string")
    scores = _column(table, score, "float").to_numpy(zero_copy_only=False)

    prompt_col = prompt_col.combine_chunks() if isinstance(prompt_col, pa.ChunkedArray) else prompt_col
    ids_in = id_col.combine_chunks() if isinstance(id_col, pa.ChunkedArray) else id_col
    runs = _grouped_runs(prompt_col, ids_in) if prompt_ids is None and grouped_layout else None
    if runs is not None:
        codes_in, universe, verdict = runs
        order = ALREADY_SORTED
    else:
        codes_in, universe = _encode_prompts(prompt_col, prompt_ids)
        verdict, order = None, _canonical_order(codes_in, ids_in, universe)
    n_prompts = len(universe)
    in_order = order is ALREADY_SORTED
    order = np.arange(len(codes_in)) if in_order else order

    def gather(values: np.ndarray) -> np.ndarray:
        return values if in_order else values[order]

    codes = gather(codes_in)
    total = np.bincount(codes, minlength=n_prompts)
    starts_all = np.cumsum(total) - total
    score_sorted = gather(scores)

    if "keep" in table.column_names:
        keep = gather(pc.fill_null(table["keep"].cast(pa.bool_()), True).to_numpy(zero_copy_only=False))
    else:
        keep = np.ones(len(codes), dtype=bool)
    finite = np.isfinite(score_sorted)
    usable = keep & finite
    duplicate = np.zeros(len(codes), dtype=bool)
    if "text" in table.column_names and usable.any():
        texts = table["text"] if in_order else table["text"].take(pa.array(order))
        candidates_at = np.flatnonzero(usable & ~pc.is_null(texts).to_numpy(zero_copy_only=False))
        firsts = (
            pa.table({"code": codes[candidates_at], "text": texts.take(pa.array(candidates_at)), "pos": candidates_at})
            .group_by(["code", "text"], use_threads=False).aggregate([("pos", "min")])["pos_min"].to_numpy()
        )
        duplicate[candidates_at] = True
        duplicate[firsts] = False
        usable &= ~duplicate

    everything = bool(usable.all())
    usable_codes = codes if everything else codes[usable]
    usable_scores = score_sorted if everything else score_sorted[usable]
    n_usable = np.bincount(usable_codes, minlength=n_prompts)
    present = np.flatnonzero(n_usable)
    first_usable = np.cumsum(n_usable[present]) - n_usable[present]
    lowest = np.full(n_prompts, np.inf)
    highest = np.full(n_prompts, -np.inf)
    if len(present):  # rows are grouped by prompt, so per-prompt extremes are segment reductions
        lowest[present] = np.minimum.reduceat(usable_scores, first_usable)
        highest[present] = np.maximum.reduceat(usable_scores, first_usable)
    ok = (n_usable >= 2) & (highest > lowest)

    dropped = []
    if not ok.all():
        filtered = np.bincount(codes[~keep], minlength=n_prompts)
        unscored = np.bincount(codes[keep & ~finite], minlength=n_prompts)
        duplicates = np.bincount(codes[duplicate], minlength=n_prompts)
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

    group_codes = np.flatnonzero(ok)
    remap = np.full(n_prompts, -1, dtype=np.int64)
    remap[group_codes] = np.arange(len(group_codes))
    every_prompt = len(group_codes) == n_prompts
    if everything and every_prompt:  # the common cases first: fewest copies
        row_index, g_codes, score_rows, rows = None, codes, score_sorted, order
    elif every_prompt:
        row_index = np.flatnonzero(usable)
        g_codes, score_rows = usable_codes, usable_scores
        rows = row_index if in_order else order[row_index]
    else:
        row_index = np.flatnonzero(usable & ok[codes])
        g_codes, score_rows, rows = remap[codes[row_index]], score_sorted[row_index], order[row_index]
    counts = n_usable[group_codes].astype(np.int64)
    starts = np.cumsum(counts) - counts
    sorted_at = np.arange(len(codes)) if row_index is None else row_index
    if ties == "random":
        prompt_hash = rnd.hash_strings(universe.take(pa.array(group_codes))) if len(group_codes) else np.zeros(0, np.uint64)
        keys = rnd.candidate_keys(rnd.prompt_keys(prompt_hash, seed, TIE_STREAM)[g_codes], sorted_at - starts_all[codes[sorted_at]])
        perm = np.argsort((g_codes.astype(np.uint64) << np.uint64(32)) | (keys >> np.uint64(32)), kind="stable")
        tie = np.empty(len(perm), dtype=np.int64)
        tie[perm] = np.arange(len(perm))
    elif ties == "lowest_id":
        tie = np.arange(len(g_codes), dtype=np.int64)
    else:
        raise ValueError(f"ties must be 'lowest_id' or 'random', got {ties!r}")
    groups = Groups(
        prompt_ids=universe if every_prompt else universe.take(pa.array(group_codes, pa.int64())),
        starts=starts, counts=counts, codes=g_codes, ids_in=ids_in, score=score_rows, tie=tie,
        rows=rows, seed=seed, table=table, sorted_at=sorted_at, all_starts=starts_all, all_codes=codes,
        ordered_ties=ties == "lowest_id",
    )
    if dropped:
        dropped_ids, reasons, details = zip(*dropped)
    else:
        dropped_ids, reasons, details = [], [], []
    if verdict is not None and not verdict.result():  # not grouped after all: the general path
        return prepare(candidates, score, seed=seed, ties=ties, prompt_ids=prompt_ids, grouped_layout=False)
    return Prepared(groups, dropped_table(list(dropped_ids), list(reasons), list(details)))
