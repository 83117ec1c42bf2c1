"""AMPO, Active Multi-Preference Optimization (arXiv 2502.18293): one chosen answer (the best) and
k rejected ones picked to cover the failure modes, for list-wise (group-contrastive) training.

- bottomk: the k lowest scores.
- coreset: k-means on the rest's embeddings into k clusters, the lowest-scored member of each.
- optselect: the k medoids S of the rest minimising sum_i w_i * min_(j in S) ||e_i - e_j||,
  w_i = exp(mean - r_i) (low scores weigh more), by swap local search from a seeded start.

"The rest" is every usable candidate scoring strictly below the chosen one. The clustering and the
local search run for all prompts at once on padded [prompts, n, ...] arrays.
"""
from __future__ import annotations

import numpy as np

from prefsynth.select import keys as rnd
from prefsynth.select.groups import MAX_INT, Groups
from prefsynth.select.result import Lists
from prefsynth.select.sweet_spot import draw_ranks

KMEANS_STREAM, OPTSELECT_STREAM = 3, 4


def _chosen_and_rest(g: Groups) -> tuple[np.ndarray, np.ndarray]:
    chosen = g.best()
    return chosen, g.score < g.score[chosen][g.codes]


def _worst_first(g: Groups, rows: np.ndarray) -> np.ndarray:
    """rows sorted by group, then score ascending, then tie order."""
    return rows[np.lexsort((g.tie[rows], g.score[rows], g.codes[rows]))]


def ampo_bottomk(g: Groups, params) -> Lists:
    chosen, rest = _chosen_and_rest(g)
    ordered = _worst_first(g, np.flatnonzero(rest))
    codes = g.codes[ordered]
    start = np.searchsorted(codes, np.arange(g.size))
    rank = np.arange(len(ordered)) - start[codes]
    return Lists(chosen=chosen, rejected=ordered[rank < params.k])


CHUNK_PROMPTS = 2048  # prompts per padded block: bounds memory whatever the input size


def _chunks(g: Groups):
    for lo in range(0, g.size, CHUNK_PROMPTS):
        yield lo, min(lo + CHUNK_PROMPTS, g.size)


class _Rest:
    """The rest's rows of prompts lo..hi-1 as padded [prompts, width] arrays (local prompt index)."""

    def __init__(self, g: Groups, rest: np.ndarray, column: str, lo: int, hi: int, rank: np.ndarray):
        first, last = g.starts[lo], g.starts[hi - 1] + g.counts[hi - 1]
        self.rows = first + np.flatnonzero(rest[first:last])
        codes = g.codes[self.rows] - lo
        self.counts = np.bincount(codes, minlength=hi - lo)
        starts = np.cumsum(self.counts) - self.counts
        width = int(self.counts.max())
        slot = np.arange(len(self.rows)) - starts[codes]
        self.row = np.full((hi - lo, width), -1, dtype=np.int64)
        self.row[codes, slot] = self.rows
        self.valid = self.row >= 0
        embeddings = g.embeddings(column, self.rows)
        self.points = np.zeros((hi - lo, width, embeddings.shape[1]))
        self.points[codes, slot] = embeddings
        safe = np.maximum(self.row, 0)
        self.score = np.where(self.valid, g.score[safe], np.nan)
        self.tie = np.where(self.valid, g.tie[safe], MAX_INT)
        self.rank = np.where(self.valid, rank[safe], MAX_INT)  # seeded random order of the slots
        self.prompt_hash, self.mean = g.prompt_hash[lo:hi], g.mean[lo:hi]


def _square_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """[p, n, d] x [p, k, d] -> [p, n, k] squared Euclidean distances."""
    return ((points[:, :, None, :] - centers[:, None, :, :]) ** 2).sum(axis=3)


def kmeans(rest: _Rest, k: int, max_iter: int, seed: int) -> np.ndarray:
    """Seeded k-means++ then Lloyd, all prompts at once. Returns each rest slot's cluster [p, n]
    (-1 for padding); a prompt gets min(k, distinct points) clusters."""
    size, width = rest.valid.shape
    clusters = np.minimum(k, rest.counts)
    first_slot = rest.rank.argmin(axis=1)  # a seeded uniform pick
    index = np.arange(size)
    centers = np.zeros((size, k, rest.points.shape[2]))
    live = np.zeros((size, k), dtype=bool)
    centers[:, 0], live[:, 0] = rest.points[index, first_slot], True
    for c in range(1, k):
        nearest = np.where(live[:, None, :c], _square_distances(rest.points, centers[:, :c]), np.inf).min(axis=2)
        weight = np.where(rest.valid, nearest, 0.0)
        total = weight.sum(axis=1)
        u = rnd.uniform(rnd.prompt_keys(rest.prompt_hash, seed, KMEANS_STREAM + 100 + c))
        pick = (np.cumsum(weight, axis=1) > (u * total)[:, None]).argmax(axis=1)
        grow = (c < clusters) & (total > 0)  # total 0: every point sits on a center already
        centers[grow, c] = rest.points[index[grow], pick[grow]]
        live[grow, c] = True
    assign = np.full((size, width), -1)
    for _ in range(max_iter):
        distance = np.where(live[:, None, :], _square_distances(rest.points, centers), np.inf)
        new = np.where(rest.valid, distance.argmin(axis=2), -1)
        if (new == assign).all():
            break
        assign = new
        member = (assign[:, :, None] == np.arange(k)) & rest.valid[:, :, None]  # [p, n, k]
        count = member.sum(axis=1)
        sums = np.einsum("pnk,pnd->pkd", member.astype(float), rest.points)
        filled = count > 0
        centers = np.where(filled[:, :, None], sums / np.maximum(count, 1)[:, :, None], centers)
    return assign


def _lowest_per_cluster(rest: _Rest, assign: np.ndarray, k: int) -> np.ndarray:
    index = np.arange(rest.valid.shape[0])[:, None]
    picks = []
    for cluster in range(k):
        mine = assign == cluster
        low = np.where(mine, rest.score, np.inf).min(axis=1)
        slot = np.where(mine & (rest.score == low[:, None]), rest.tie, MAX_INT).argmin(axis=1)
        picks.append(np.where(mine.any(axis=1), rest.row[index[:, 0], slot], -1))
    rows = np.stack(picks, axis=1).ravel()
    return rows[rows >= 0]


def ampo_coreset(g: Groups, params) -> Lists:
    chosen, rest_mask = _chosen_and_rest(g)
    rank, picked = draw_ranks(g, KMEANS_STREAM), []
    for lo, hi in _chunks(g):
        rest = _Rest(g, rest_mask, params.embedding, lo, hi, rank)
        picked.append(_lowest_per_cluster(rest, kmeans(rest, params.k, params.max_iter, g.seed), params.k))
    return Lists(chosen=chosen, rejected=_worst_first(g, np.concatenate(picked)))


def ampo_optselect(g: Groups, params) -> Lists:
    chosen, rest_mask = _chosen_and_rest(g)
    rank, picked = draw_ranks(g, OPTSELECT_STREAM), []
    for lo, hi in _chunks(g):
        rest = _Rest(g, rest_mask, params.embedding, lo, hi, rank)
        picked.append(_medoids(rest, params.k, params.max_iter))
    return Lists(chosen=chosen, rejected=_worst_first(g, np.concatenate(picked)))


def objective(points: np.ndarray, weights: np.ndarray, medoids) -> float:
    """sum_i w_i * min_(j in medoids) ||e_i - e_j|| for one prompt (used by tests and docs)."""
    distance = np.sqrt(((points[:, None, :] - points[None, list(medoids), :]) ** 2).sum(axis=2))
    return float((weights * distance.min(axis=1)).sum())


def _medoids(rest: _Rest, k: int, max_iter: int) -> np.ndarray:
    size, width = rest.valid.shape
    distance = np.sqrt(np.maximum(_square_distances(rest.points, rest.points), 0.0))  # [p, n, n]
    weight = np.where(rest.valid, np.exp(rest.mean[:, None] - np.nan_to_num(rest.score)), 0.0)
    # seeded start: the k rest slots drawn first; slots beyond min(k, count) stay empty (-1)
    start = np.argsort(rest.rank, axis=1, kind="stable")[:, :k]
    slots = np.where(np.arange(start.shape[1]) < np.minimum(k, rest.counts)[:, None], start, -1)
    k = slots.shape[1]
    index = np.arange(size)
    for _ in range(max_iter):
        gathered = distance[index[:, None], :, np.maximum(slots, 0)].transpose(0, 2, 1)  # [p, n, k]
        current = np.where((slots >= 0)[:, None, :], gathered, np.inf)
        cost = (weight * current.min(axis=2)).sum(axis=1)
        without = np.stack([  # [p, k, n]: distance to the nearest medoid once slot t is removed
            np.delete(current, t, axis=2).min(axis=2) if k > 1 else np.full((size, width), np.inf) for t in range(k)
        ], axis=1)
        swapped = np.minimum(without[:, :, :, None], distance[:, None, :, :])  # [p, t, i, o]
        new_cost = (weight[:, None, :, None] * swapped).sum(axis=2)  # [p, t, o]
        in_set = (slots[:, :, None] == np.arange(width)).any(axis=1)  # [p, n]
        allowed = (slots >= 0)[:, :, None] & (rest.valid & ~in_set)[:, None, :]
        new_cost = np.where(allowed, new_cost, np.inf).reshape(size, -1)
        best = new_cost.argmin(axis=1)
        better = new_cost[index, best] < cost - 1e-12 * np.abs(cost)
        if not better.any():
            break
        t, o = np.divmod(best[better], width)
        slots[index[better], t] = o
    picked = np.where(slots >= 0, rest.row[index[:, None], np.maximum(slots, 0)], -1).ravel()
    return picked[picked >= 0]
