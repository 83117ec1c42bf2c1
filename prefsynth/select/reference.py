"""Plain per-prompt Python versions of the selectors: the specification in executable form.

Written to be read, not to be fast: rows become dicts, each prompt is a list, each method a few
lines over it. tests/test_select.py checks that the vectorised selectors give exactly these
results, and benchmarks/select_vs_reference.py times both. (Random draws use the same counter-based keys,
computed per prompt, so both sides see the same draws.)

Covers best_worst, mu_sigma, sweet_spot_scalable, margin, rso, ampo_bottomk and mpo; the
clustering methods (ampo_coreset, ampo_optselect) are checked by their properties instead.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from prefsynth.select import keys as rnd
from prefsynth.select.groups import as_table
from prefsynth.select.rso import ROUND_STREAM
from prefsynth.select.sweet_spot import SAMPLE_STREAM
from prefsynth.select.groups import TIE_STREAM


def _prompts(table: pa.Table, score: str, prompt_ids):
    """{prompt_id: [candidate dicts sorted by candidate_id, each with id_rank]} in prompt order."""
    columns = ["prompt_id", "candidate_id", score] + [c for c in ("keep", "text") if c in table.column_names]
    by_prompt: dict[str, list[dict]] = {p: [] for p in (prompt_ids or [])}
    for row in table.select(columns).to_pylist():
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    for rows in by_prompt.values():
        rows.sort(key=lambda r: r["candidate_id"])
        for rank, row in enumerate(rows):
            row["id_rank"] = rank
    return by_prompt


def _usable(rows: list[dict], score: str) -> list[dict]:
    usable, seen = [], set()
    for row in rows:
        value = row[score]
        if row.get("keep") is False or value is None or not math.isfinite(value):
            continue
        text = row.get("text")
        if text is not None:
            if text in seen:
                continue
            seen.add(text)
        usable.append({"id": row["candidate_id"], "score": float(value), "id_rank": row["id_rank"]})
    return usable


def _keys(prompt_id: str, rows: list[dict], seed: int, stream: int) -> list[int]:
    prompt_hash = rnd.hash_strings(pa.array([prompt_id]))
    ranks = np.array([r["id_rank"] for r in rows])
    return [int(k) for k in rnd.candidate_keys(rnd.prompt_keys(prompt_hash, seed, stream)[0], ranks)]


def _random_order(prompt_id: str, rows: list[dict], seed: int, stream: int) -> list[dict]:
    keys = _keys(prompt_id, rows, seed, stream)
    return [row for _, _, row in sorted((k >> 32, i, row) for i, (k, row) in enumerate(zip(keys, rows)))]


def reference_select(candidates, method: str, *, score: str = "score", seed: int = 0, ties: str = "lowest_id",
                     prompt_ids=None, **params) -> dict:
    """{"pairs" or "lists": [row dicts], "dropped": {prompt_id: reason}}."""
    table = as_table(candidates)
    pairs, lists, dropped = [], [], {}
    for prompt_id, rows in _prompts(table, score, prompt_ids).items():
        usable = _usable(rows, score)
        if not rows:
            dropped[prompt_id] = "no_candidates"
            continue
        if len(usable) < 2:
            dropped[prompt_id] = "too_few_candidates"
            continue
        scores = [r["score"] for r in usable]
        if max(scores) == min(scores):
            dropped[prompt_id] = "no_spread"
            continue
        if ties == "random":
            for place, row in enumerate(_random_order(prompt_id, usable, seed, TIE_STREAM)):
                row["tie"] = place
        else:
            for place, row in enumerate(usable):
                row["tie"] = place
        mu = sigma = None
        if method in ("mu_sigma", "mpo"):  # the methods that use the prompt's mean and deviation
            total = 0.0
            for s in scores:
                total += s
            mu = total / len(scores)
            squares = 0.0
            for s in scores:
                squares += (s - mu) * (s - mu)
            sigma = math.sqrt(squares / len(scores))
        found = METHODS[method](prompt_id, usable, mu, sigma, seed, params)
        if isinstance(found, str):
            dropped[prompt_id] = found
            continue
        if method in ("ampo_bottomk", "mpo"):
            lists.append({"prompt_id": prompt_id} | found)
            continue
        floor = 0.0 if method == "margin" else params.get("min_margin", 0.0)  # margin: min_margin is its band
        emitted = [(c, r, i) for c, r, i in found if c["score"] - r["score"] > floor]
        if not emitted:
            dropped[prompt_id] = "margin_below_min"
        for chosen, rejected, index in emitted:
            pairs.append({
                "prompt_id": prompt_id, "chosen_id": chosen["id"], "rejected_id": rejected["id"],
                "chosen_score": chosen["score"], "rejected_score": rejected["score"],
                "margin": chosen["score"] - rejected["score"], "pair_index": index,
            })
    return {"lists" if method in ("ampo_bottomk", "mpo") else "pairs": lists or pairs, "dropped": dropped}


def _best(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (-r["score"], r["tie"]))


def _worst(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (r["score"], r["tie"]))


def _best_worst(prompt_id, rows, mu, sigma, seed, params):
    return [(_best(rows), _worst(rows), 0)]


def _mu_sigma(prompt_id, rows, mu, sigma, seed, params):
    target = mu + params.get("rejected_k", -2.0) * sigma
    rejected = min(rows, key=lambda r: (abs(r["score"] - target), r["tie"]))
    if params.get("chosen_k") is None:
        chosen = _best(rows)
    else:
        aim = mu + params["chosen_k"] * sigma
        chosen = min(rows, key=lambda r: (abs(r["score"] - aim), r["tie"]))
    return [(chosen, rejected, 0)] if chosen["score"] > rejected["score"] else "chosen_not_above_rejected"


def _sweet_spot_scalable(prompt_id, rows, mu, sigma, seed, params):
    chosen = _best(rows)
    drawn = [r for r in _random_order(prompt_id, rows, seed, SAMPLE_STREAM) if r is not chosen][: params.get("m", 5)]
    rejected = _worst(drawn)
    return [(chosen, rejected, 0)] if chosen["score"] > rejected["score"] else "sample_tied_with_best"


def _margin(prompt_id, rows, mu, sigma, seed, params):
    low, high = params.get("min_margin", 0.0), params["max_margin"]
    floor = params.get("min_chosen")
    middle = (low + high) / 2
    valid = [
        (c, r) for c in rows for r in rows
        if c["score"] - r["score"] > 0 and low <= c["score"] - r["score"] <= high
        and (floor is None or c["score"] >= floor)
    ]
    if not valid:
        return "no_pair_in_band"
    chosen, rejected = min(
        valid, key=lambda p: (-p[0]["score"], abs(p[0]["score"] - p[1]["score"] - middle), p[0]["tie"], p[1]["tie"])
    )
    return [(chosen, rejected, 0)]


def _rso(prompt_id, rows, mu, sigma, seed, params):
    beta, m = params.get("beta", 0.5), min(params.get("m", 8), len(rows))
    remaining = sorted(rows, key=lambda r: r["tie"])
    accepted, round_number = [], 0
    while len(accepted) < m:  # Algorithm 1 of the RSO paper
        keys = dict(zip((r["id"] for r in rows), _keys(prompt_id, rows, seed, ROUND_STREAM + round_number)))
        best = max(r["score"] for r in remaining)
        taken = []
        for row in remaining:
            u = rnd.uniform(np.array([keys[row["id"]]], dtype=np.uint64))[0]
            if u >= np.exp((row["score"] - best) / beta):
                continue
            accepted.append(row)
            taken.append(row)
            if len(accepted) == m:
                break
        remaining = [r for r in remaining if r not in taken]
        round_number += 1
    pairs = []
    for index in range(len(accepted) // 2):
        a, b = accepted[2 * index], accepted[2 * index + 1]
        if a["score"] != b["score"]:
            pairs.append((a, b, index) if a["score"] > b["score"] else (b, a, index))
    return pairs or "rso_pairs_tied"


def _ampo_bottomk(prompt_id, rows, mu, sigma, seed, params):
    chosen = _best(rows)
    rest = sorted((r for r in rows if r["score"] < chosen["score"]), key=lambda r: (r["score"], r["tie"]))
    rejected = rest[: params.get("k", 3)]
    return {"chosen_ids": [chosen["id"]], "rejected_ids": [r["id"] for r in rejected],
            "chosen_scores": [chosen["score"]], "rejected_scores": [r["score"] for r in rejected], "weights": None}


def _mpo(prompt_id, rows, mu, sigma, seed, params):
    chosen = sorted((r for r in rows if r["score"] > mu), key=lambda r: (-r["score"], r["tie"]))
    rejected = sorted((r for r in rows if r["score"] <= mu), key=lambda r: (r["score"], r["tie"]))
    return {"chosen_ids": [r["id"] for r in chosen], "rejected_ids": [r["id"] for r in rejected],
            "chosen_scores": [r["score"] for r in chosen], "rejected_scores": [r["score"] for r in rejected],
            "weights": [abs(r["score"] - mu) for r in chosen + rejected]}


METHODS = {
    "best_worst": _best_worst, "mu_sigma": _mu_sigma, "sweet_spot_scalable": _sweet_spot_scalable,
    "margin": _margin, "rso": _rso, "ampo_bottomk": _ampo_bottomk, "mpo": _mpo,
}
