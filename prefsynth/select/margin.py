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


def padded(g: Groups, lo: int, hi: int, values: np.ndarray, fill) -> np.ndarray:
    """Rows of groups lo..hi-1 as a [groups, max count] array, `fill` beyond each group's end."""
    first, last = g.starts[lo], g.starts[hi - 1] + g.counts[hi - 1]
    out = np.full((hi - lo, int(g.counts[lo:hi].max())), fill, dtype=np.asarray(values).dtype)
    out[g.codes[first:last] - lo, np.arange(first, last) - g.starts[g.codes[first:last]]] = values[first:last]
    return out


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
    rows = np.arange(len(g.score))
    lo = 0
    while lo < g.size:
        width = int(g.counts[lo])
        hi = lo + 1
        while hi < g.size and (hi - lo + 1) * max(width, int(g.counts[hi])) ** 2 <= CHUNK_CELLS:
            width = max(width, int(g.counts[hi]))
            hi += 1
        score = padded(g, lo, hi, g.score, np.nan)
        tie = padded(g, lo, hi, g.tie, MAX_INT)
        row = padded(g, lo, hi, rows, -1)
        diff = score[:, :, None] - score[:, None, :]  # [group, chosen, rejected]
        valid = (diff >= low) & (diff <= high) & (diff > 0) & (score >= floor)[:, :, None]
        has = valid.any(axis=2)
        best = np.where(has, score, -np.inf).max(axis=1)
        pick_c = np.where(has & (score == best[:, None]), tie, MAX_INT).argmin(axis=1)
        index = np.arange(hi - lo)
        distance = np.where(valid[index, pick_c], np.abs(diff[index, pick_c] - middle), np.inf)
        nearest = distance.min(axis=1)
        pick_r = np.where(np.isfinite(nearest)[:, None] & (distance == nearest[:, None]), tie, MAX_INT).argmin(axis=1)
        found = has.any(axis=1)
        chosen[lo:hi] = np.where(found, row[index, pick_c], -1)
        rejected[lo:hi] = np.where(found, row[index, pick_r], -1)
        lo = hi
    none = np.flatnonzero(eligible & (chosen < 0))
    drops.add(none, "no_pair_in_band", [
        f"no pair with {low} <= margin <= {high}" + (f" and chosen >= {params.min_chosen}" if params.min_chosen is not None else "")
        + f" among {g.counts[x]} candidates (scores {g.score[g.starts[x]:g.starts[x] + g.counts[x]].min():.4g}.."
        f"{g.score[g.starts[x]:g.starts[x] + g.counts[x]].max():.4g})"
        for x in none
    ])
    ok = np.flatnonzero(eligible & (chosen >= 0))
    return Pairs(chosen[ok], rejected[ok], drops=drops)
