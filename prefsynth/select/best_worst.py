"""best_worst: chosen = the highest score, rejected = the lowest. What every peer tool does."""
from __future__ import annotations


from prefsynth.select.groups import Groups
from prefsynth.select.result import Pairs


def best_worst(g: Groups, params) -> Pairs:
    return Pairs(chosen=g.best(), rejected=g.first(None, g.score))
