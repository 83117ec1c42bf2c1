"""AIR (arXiv 2504.03612): response pairs with a moderate margin and a high chosen score train
better than maximal margins; instructions on which judges disagree (high score variance across
judges) are better left out.

All ordered pairs of a prompt are compared at once on padded [prompts, n, n] arrays, in chunks of
prompts so memory stays bounded whatever n is.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from prefsynth.select.groups import MAX_INT, Groups
from prefsynth.select.result import Drops, Pairs

CHUNK_CELLS = 1 << 22  # pair cells per chunk (x ~4 arrays of 8 bytes)


def variance_column(params) -> str:
    if params.variance_column:
        return params.variance_column
    if params.score and params.score.endswith("_score"):
        return params.score.removesuffix("_score") + "_variance"
    raise ValueError(
        f"max_variance needs variance_column: score {params.score!r} is not an ensemble's `{{name}}_score`, "
        "so there is no `{name}_variance` beside it"
    )


def judge_variance(g: Groups, column: str) -> np.ndarray:
    """Mean across-judge variance of each prompt's usable candidates (nulls ignored; NaN if none)."""
    if column not in g.table.column_names:
        raise ValueError(f"candidates have no variance column {column!r} (an ensemble adds `{{name}}_variance`)")
    values = g.table[column].cast(pa.float64()).take(pa.array(g.rows)).to_numpy(zero_copy_only=False)
    known = np.isfinite(values)
    total = np.bincount(g.codes, weights=np.where(known, values, 0.0), minlength=g.size)
    count = np.bincount(g.codes, weights=known.astype(float), minlength=g.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def padded(g: Groups, groups: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
    """The rows of `groups` as a [len(groups), max count] array in canonical order, `fill` beyond
    each group's end."""
    counts = g.counts[groups]
    width = int(counts.max())
    index = g.starts[groups][:, None] + np.arange(width)
    if (counts == width).all():
        return np.asarray(values)[index]
    return np.where(np.arange(width) < counts[:, None], np.asarray(values)[np.minimum(index, len(values) - 1)], fill)


def chunks_by_size(g: Groups, cells: int = CHUNK_CELLS):
    """Groups ordered by size, cut into chunks of about `cells` padded pair cells each."""
    by_size = np.argsort(g.counts, kind="stable")
    cost = np.cumsum(g.counts[by_size].astype(np.int64) ** 2)
    cuts = np.searchsorted(cost, np.arange(cells, int(cost[-1]) + cells, cells), side="right") if len(cost) else []
    start = 0
    for end in list(cuts) + [len(by_size)]:
        end = max(end, start + 1)
        if start < len(by_size):
            yield by_size[start:end]
        start = end


def margin(g: Groups, params) -> Pairs:
    drops = Drops()
    eligible = np.ones(g.size, dtype=bool)
    if params.max_variance is not None:
        column = variance_column(params)
        variance = judge_variance(g, column)
        unstable = np.flatnonzero(variance > params.max_variance)
        drops.add(unstable, "judge_variance_above_max",
                  [f"mean {column} {variance[x]:.6g} > max_variance {params.max_variance}" for x in unstable])
        eligible[unstable] = False
    low, high = params.min_margin, params.max_margin
    middle = (low + high) / 2
    floor = -np.inf if params.min_chosen is None else params.min_chosen
    chosen, rejected = np.full(g.size, -1), np.full(g.size, -1)
    for groups in chunks_by_size(g):
        score = padded(g, groups, g.score, np.nan)
        row = g.starts[groups][:, None] + np.arange(score.shape[1])  # padding is never valid
        tie = row if g.ordered_ties else padded(g, groups, g.tie, MAX_INT)
        untried = np.isfinite(score)
        todo = np.arange(len(groups))
        while len(todo):  # the best untried candidate of each open prompt; most close in round one
            every = len(todo) == len(groups)  # round one: views, no copies
            open_scores = np.where(untried if every else untried[todo], score if every else score[todo], -np.inf)
            if g.ordered_ties:
                column = open_scores.argmax(axis=1)
            else:
                best = open_scores.max(axis=1, keepdims=True)
                column = np.where(open_scores == best, tie if every else tie[todo], MAX_INT).argmin(axis=1)
            top = open_scores[np.arange(len(todo)), column]
            diff = top[:, None] - (score if every else score[todo])
            valid = (diff >= low) & (diff <= high) if low > 0 else (diff > 0) & (diff <= high)
            found = valid.any(axis=1) & (top >= floor)
            hit = todo[found]
            distance = np.where(valid[found], np.abs(diff[found] - middle), np.inf)
            nearest = distance.min(axis=1, initial=np.inf)
            pick = np.where(distance == nearest[:, None], tie[hit], MAX_INT).argmin(axis=1)
            chosen[groups[hit]] = row[hit, column[found]]
            rejected[groups[hit]] = row[hit, pick]
            untried[todo, column] = False
            todo = todo[~found & np.isfinite(top)]
    none = np.flatnonzero(eligible & (chosen < 0))
    drops.add(none, "no_pair_in_band", [
        f"no pair with {low} <= margin <= {high}" + (f" and chosen >= {params.min_chosen}" if params.min_chosen is not None else "")
        + f" among {g.counts[x]} candidates (scores {g.score[g.starts[x]:g.starts[x] + g.counts[x]].min():.4g}.."
        f"{g.score[g.starts[x]:g.starts[x] + g.counts[x]].max():.4g})"
        for x in none
    ])
    ok = np.flatnonzero(eligible & (chosen >= 0))
    return Pairs(chosen[ok], rejected[ok], drops=drops)
