"""Statistical Rejection Sampling (RSO, arXiv 2309.06657, Algorithm 1).

Candidates from the SFT policy are re-sampled toward the optimal policy pi*(y) ~ pi_sft(y) exp(r/beta):
in rounds, each remaining candidate (in tie order) is accepted with probability
exp((r - r_max) / beta), r_max the best remaining reward (so the best is always accepted), until
`m` are accepted. Accepted candidates are paired first-round style: 1st with 2nd, 3rd with 4th, ...,
the higher reward chosen; equal rewards make no pair.

The rounds are inherently sequential; each round is one vectorised pass over all prompts.
"""
from __future__ import annotations

import numpy as np

from prefsynth.select import keys as rnd
from prefsynth.select.groups import Groups
from prefsynth.select.result import Drops, Pairs

ROUND_STREAM = 1000  # round r draws from stream 1000 + r


def accept(g: Groups, beta: float, m: int) -> np.ndarray:
    """Acceptance position of each row (0 = first accepted), -1 for rows never accepted."""
    order = g.row_of_tie  # the groups' rows, each group in iteration order
    codes, score = g.codes[order], g.score[order]
    quota = np.minimum(m, g.counts)
    taken = np.zeros(g.size, dtype=np.int64)
    position = np.full(len(order), -1, dtype=np.int64)
    remaining = np.ones(len(order), dtype=bool)
    round_number = 0
    while (taken < quota).any():
        live = remaining & (taken < quota)[codes]
        best = g.segment_max(np.where(live, score, -np.inf))
        u = rnd.uniform(g.keys(ROUND_STREAM + round_number)[order])
        with np.errstate(over="ignore", invalid="ignore"):
            hit = live & (u < np.exp((score - best[codes]) / beta))
        running = np.cumsum(hit)
        before = np.where(g.starts > 0, running[g.starts - 1], 0)
        within = running - before[codes]  # hits so far in this group and round, this row included
        hit &= taken[codes] + within <= quota[codes]
        position[hit] = taken[codes[hit]] + within[hit] - 1
        remaining &= ~hit
        taken += np.bincount(codes[hit], minlength=g.size)
        round_number += 1
    out = np.full(len(order), -1, dtype=np.int64)
    out[order] = position
    return out


def rso(g: Groups, params) -> Pairs:
    position = accept(g, params.beta, params.m)
    accepted = np.flatnonzero(position >= 0)
    accepted = accepted[np.lexsort((position[accepted], g.codes[accepted]))]
    codes, place = g.codes[accepted], position[accepted]
    first = np.flatnonzero((place % 2 == 0) & (np.append(codes[1:], -1) == codes))
    a, b = accepted[first], accepted[first + 1]
    higher = g.score[a] > g.score[b]
    distinct = g.score[a] != g.score[b]
    chosen, rejected = np.where(higher, a, b)[distinct], np.where(higher, b, a)[distinct]
    drops = Drops()
    paired = np.unique(g.codes[chosen])
    tied = np.setdiff1d(np.arange(g.size), paired)
    drops.add(tied, "rso_pairs_tied", [f"every accepted pair of {min(params.m, g.counts[x])} has equal scores" for x in tied])
    return Pairs(chosen, rejected, pair_index=(place[first] // 2)[distinct], drops=drops)
