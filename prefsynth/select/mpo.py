"""MPO, Multi-Preference Optimization: every candidate above the prompt's mean score is a positive,
every other one a negative, each weighted by its distance |r - mean| from the mean."""
from __future__ import annotations

import numpy as np

from prefsynth.select.groups import Groups
from prefsynth.select.result import Lists


def mpo(g: Groups, params) -> Lists:
    above = g.score > g.mean[g.codes]
    rows = np.arange(len(g.score))
    chosen = rows[above][np.lexsort((g.tie[above], -g.score[above], g.codes[above]))]
    below = ~above
    rejected = rows[below][np.lexsort((g.tie[below], g.score[below], g.codes[below]))]
    weight = np.abs(g.score - g.mean[g.codes])
    return Lists(chosen=chosen, rejected=rejected, chosen_weights=weight[chosen], rejected_weights=weight[rejected])
