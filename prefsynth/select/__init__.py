"""Selectors: scored candidates -> preference pairs (or lists), as the papers define them.

    from prefsynth.select import select
    selection = select(candidates, "mu_sigma", score="rm_score_raw", seed=0, rejected_k=-2)
    selection.pairs, selection.lists, selection.dropped

Every method shares one preparation (groups.py: usable candidates, duplicate texts counted once,
canonical order, prompts without spread dropped with a reason) and the same tie rule (the lowest
candidate_id, or a seeded random order). Each method is one small vectorised function over the
grouped numpy arrays; reference.py holds plain per-prompt Python versions that tests and
benchmarks/select_vs_reference.py compare against.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from prefsynth import schemas
from prefsynth.config import LIST_METHODS, SELECTORS
from prefsynth.select.ampo import ampo_bottomk, ampo_coreset, ampo_optselect
from prefsynth.select.best_worst import best_worst
from prefsynth.select.groups import prepare
from prefsynth.select.margin import margin
from prefsynth.select.mpo import mpo
from prefsynth.select.result import Lists, Selection, lists_table, pairs_table
from prefsynth.select.rso import rso
from prefsynth.select.sweet_spot import mu_sigma, sweet_spot_scalable

METHODS = {
    "best_worst": best_worst, "mu_sigma": mu_sigma, "sweet_spot_scalable": sweet_spot_scalable, "margin": margin,
    "rso": rso, "ampo_bottomk": ampo_bottomk, "ampo_coreset": ampo_coreset, "ampo_optselect": ampo_optselect,
    "mpo": mpo,
}
assert set(METHODS) == set(SELECTORS), "every configured selector needs an implementation"


def selector_config(method: str, **params: Any):
    """The validated options of a method (the same pydantic model the pipeline YAML uses)."""
    if method not in SELECTORS:
        raise ValueError(f"unknown selector method {method!r}; choose from {', '.join(SELECTORS)}")
    try:
        return SELECTORS[method](method=method, **params)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or method}: {e['msg']}" for e in error.errors())
        raise ValueError(f"selector {method}: {problems}") from None


def select(candidates, method: str, *, score: str = "score", seed: int = 0, prompt_ids=None, **params: Any) -> Selection:
    """Select pairs or lists from `candidates` (pyarrow Table or pandas DataFrame with prompt_id,
    candidate_id, the `score` column; optionally keep, text, embedding). `prompt_ids`: every prompt
    to account for (default: those in candidates), so prompts without candidates are reported."""
    return run(candidates, selector_config(method, score=score, seed=seed, **params), prompt_ids)


def run(candidates, config, prompt_ids=None) -> Selection:
    """Run a validated selector config (a pipeline's `selector`)."""
    seed = 0 if config.seed is None else config.seed
    prepared = prepare(candidates, config.score, seed=seed, ties=config.ties, prompt_ids=prompt_ids)
    groups = prepared.groups
    pairs, lists = schemas.PAIRS.empty_table(), schemas.LISTS.empty_table()
    drops = None
    if groups.size:
        output = METHODS[config.method](groups, config)
        if isinstance(output, Lists):
            lists, drops = lists_table(groups, output, config.method)
        else:
            pairs, drops = pairs_table(groups, output, config.method, config.min_margin if config.method != "margin" else 0.0)
    dropped = prepared.dropped if drops is None else pa.concat_tables([prepared.dropped, drops.table(groups)])
    params = config.model_dump(mode="json")
    return Selection(method=config.method, params=params, pairs=pairs, lists=lists, dropped=dropped)


__all__ = ["select", "run", "selector_config", "Selection", "METHODS", "LIST_METHODS"]
