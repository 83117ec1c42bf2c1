"""Finding the Sweet Spot (arXiv 2502.16825): as candidates per prompt grow, the lowest-scored one
is an outlier that teaches little; a rejected answer near mu - 2 sigma of the prompt's reward
distribution trains better models.

mu_sigma: rejected = nearest mu + rejected_k * sigma, chosen = the highest (or nearest mu + chosen_k * sigma).
sweet_spot_scalable: chosen = the highest of all n, rejected = the lowest of m drawn at random from
the rest, which approximates the same quantile without scoring a fixed position.
"""
from __future__ import annotations

import numpy as np

from prefsynth.select.groups import Groups
from prefsynth.select.result import Drops, Pairs

SAMPLE_STREAM = 2


def _not_above(g: Groups, chosen: np.ndarray, rejected: np.ndarray, drops: Drops, reason: str, why) -> np.ndarray:
    """Indices of the groups whose chosen scores above their rejected; the others are dropped."""
    above = g.score[chosen] > g.score[rejected]
    if not above.all():
        bad = np.flatnonzero(~above)
        drops.add(bad, reason, [why(x) for x in bad])
    return np.flatnonzero(above)


def mu_sigma(g: Groups, params) -> Pairs:
    target = g.mean + params.rejected_k * g.std
    rejected = g.first(None, np.abs(g.score - target[g.codes]))
    if params.chosen_k is None:
        chosen = g.best()
    else:
        chosen = g.first(None, np.abs(g.score - (g.mean + params.chosen_k * g.std)[g.codes]))
    drops = Drops()
    ok = _not_above(
        g, chosen, rejected, drops, "chosen_not_above_rejected",
        lambda x: "chosen and rejected targets land on the same candidate" if chosen[x] == rejected[x]
        else f"chosen score {g.score[chosen[x]]:.6g} <= rejected score {g.score[rejected[x]]:.6g}",
    )
    return Pairs(chosen[ok], rejected[ok], drops=drops)


def draw_ranks(g: Groups, stream: int) -> np.ndarray:
    """Each row's place in a seeded random order of its group (0 = drawn first)."""
    keys = g.keys(stream) >> np.uint64(32)
    order = np.argsort((g.codes.astype(np.uint64) << np.uint64(32)) | keys, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - g.starts[g.codes[order]]
    return rank


def sweet_spot_scalable(g: Groups, params) -> Pairs:
    chosen = g.best()
    rank = draw_ranks(g, SAMPLE_STREAM)
    is_chosen = np.arange(len(g.score)) == chosen[g.codes]
    rest_rank = rank - (rank > rank[chosen][g.codes])
    drawn = ~is_chosen & (rest_rank < params.m)
    rejected = g.first(drawn, g.score)
    drops = Drops()
    ok = _not_above(
        g, chosen, rejected, drops, "sample_tied_with_best",
        lambda x: f"the {min(params.m, g.counts[x] - 1)} drawn candidates all score {g.score[rejected[x]]:.6g}, like the best",
    )
    return Pairs(chosen[ok], rejected[ok], drops=drops)
