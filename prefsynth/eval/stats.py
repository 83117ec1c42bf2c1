"""Eval statistics: a pure function of the judgments table (schemas.JUDGMENTS).

For every judge, model (against the baseline) and language, and over all prompts:
- wins, ties, losses (after the wrong-language rule), `judge_errors` (left out), `n` (counted),
  `win_rate` = (wins + ties / 2) / n;
- a 95% CI by bootstrap over prompts: `bootstrap` resamples of the group's prompts, each
  prompt bringing all its answers (several per prompt when n > 1), percentiles 2.5 and 97.5. The
  resampling is seeded per (judge, language) with `request_seed(seed, "JUDGE/LANGUAGE")`
  ("JUDGE/overall" for all prompts) and draws the same prompt indices for every model, so models
  are compared on the same resamples and swapping model and baseline mirrors the interval;
- `macro`: the mean of the per-language win-rates, its CI from the same per-language resamples;
- `position_inconsistency` (LLM judges): the share of judged pairs whose two orders disagreed;
- `language_fidelity_model` / `_baseline`: the share of answers in the prompt's language;
- mean answer length of each side, in characters (`mean_chars_*`) and tokens (`mean_tokens_*`);
- `lc_win_rate`, a length-controlled win-rate in the spirit of AlpacaEval 2.0: the GLM
  logit P(model preferred) = theta + phi * tanh((chars_model - chars_baseline) / sd), fitted by
  statsmodels (Binomial family, ties as 0.5), reported at zero length difference: sigmoid(theta).
  (AlpacaEval's instruction-difficulty term needs many models; it is left out.);
- with three or more models, Bradley-Terry ratings (`bt_rating`, `bt_ci_low`, `bt_ci_high`) from
  every model's battles against the baseline (ties half a win each way, as arena-hard-auto
  counts them), maximum likelihood by the MM algorithm, on the Elo scale 400 * log10(strength)
  with the baseline at 1000; null when a model won or lost every battle (no finite estimate).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from prefsynth.engine import request_seed

CHUNK = 64  # bootstrap resamples drawn at once (bounds memory for large eval sets)
BT_SCALE, BT_BASE = 400.0, 1000.0


def final_outcomes(judgments: pd.DataFrame, wrong_language: str) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, reason): the judge's outcome, with the wrong-language rule applied when `lose`:
    an answer not in the prompt's language loses to one that is (both wrong: the judge decides)."""
    outcome = judgments["judge_outcome"].to_numpy(dtype=float, na_value=np.nan).copy()
    reason = judgments["reason"].to_numpy(dtype=object).copy()
    if wrong_language == "lose":
        model_in = judgments["model_in_language"].to_numpy(dtype=object)
        baseline_in = judgments["baseline_in_language"].to_numpy(dtype=object)
        model_wrong = (model_in == False) & (baseline_in == True)  # noqa: E712 (null stays unknown)
        baseline_wrong = (baseline_in == False) & (model_in == True)  # noqa: E712
        outcome[model_wrong], reason[model_wrong] = 0.0, "wrong_language:model"
        outcome[baseline_wrong], reason[baseline_wrong] = 1.0, "wrong_language:baseline"
    return outcome, reason


def bootstrap_indices(prompts: int, rounds: int, key: str, seed: int):
    """The resampled prompt indices, `CHUNK` rounds at a time: rng = default_rng(request_seed(seed,
    key)), each chunk rng.integers(0, prompts, (chunk, prompts))."""
    rng = np.random.default_rng(request_seed(seed, key))
    for start in range(0, rounds, CHUNK):
        yield rng.integers(0, prompts, size=(min(CHUNK, rounds - start), prompts))


def resampled_sums(values: np.ndarray, rounds: int, key: str, seed: int) -> np.ndarray:
    """Column sums of `values` (prompts x k) over each bootstrap resample: (rounds, k)."""
    if len(values) == 0:
        return np.full((rounds, values.shape[1]), np.nan)
    return np.concatenate([values[index].sum(axis=1) for index in bootstrap_indices(len(values), rounds, key, seed)])


def percentile_ci(samples: np.ndarray) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None, None
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def length_controlled(outcome: np.ndarray, length_difference: np.ndarray) -> float | None:
    """sigmoid(theta) of the GLM logit P = theta + phi * tanh(dl / sd(dl)) (see the module doc)."""
    import statsmodels.api as sm

    keep = np.isfinite(outcome)
    y, difference = outcome[keep], length_difference[keep].astype(float)
    if len(y) == 0:
        return None
    if y.min() == y.max():
        return float(y[0])  # nothing to separate: every comparison went one way
    spread = difference.std()
    features = [np.ones(len(y))] + ([np.tanh(difference / spread)] if spread > 0 and len(y) > 2 else [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = sm.GLM(y, np.column_stack(features), family=sm.families.Binomial()).fit()
    except Exception:  # e.g. perfect separation by length
        return None
    theta = float(fit.params[0])
    return float(1 / (1 + math.exp(-theta))) if np.isfinite(theta) else None


def bradley_terry(wins: np.ndarray, iterations: int = 1000, tolerance: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry strengths by Hunter's MM algorithm, batched: `wins` is
    (..., k, k) with wins[i, j] = battles i won against j (ties count half to each); returns
    log-strengths (..., k) with item 0 (the baseline) at 0. Items that never won get -inf,
    items that never lost +inf."""
    wins = np.asarray(wins, float)
    battles = wins + np.swapaxes(wins, -1, -2)
    won = wins.sum(axis=-1)
    strength = np.ones(wins.shape[:-1])
    for _ in range(iterations):
        pair = strength[..., :, None] + strength[..., None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            denominator = np.where(battles > 0, battles / pair, 0.0).sum(axis=-1)
            updated = np.where(denominator > 0, won / denominator, strength)
            updated = updated / updated[..., :1]
        if np.nanmax(np.abs(np.log(np.clip(updated, 1e-300, None)) - np.log(np.clip(strength, 1e-300, None)))) < tolerance:
            strength = updated
            break
        strength = updated
    lost = (battles.sum(axis=-1) - won)
    with np.errstate(divide="ignore"):
        log_strength = np.log(strength)
    log_strength = np.where(won == 0, -np.inf, np.where(lost == 0, np.inf, log_strength))
    log_strength[..., 0] = 0.0
    return log_strength


def _rating(log_strength: np.ndarray) -> np.ndarray:
    return BT_BASE + BT_SCALE * log_strength / math.log(10)


def _group_stats(rows: pd.DataFrame, outcome: np.ndarray, prompts: pd.Index, indices: list[np.ndarray]) -> tuple[dict, np.ndarray]:
    """One S dict for rows of one model (and judge, language) + the per-resample win-rates."""
    valid = np.isfinite(outcome)
    position = prompts.get_indexer(rows["prompt_id"])
    score = np.bincount(position[valid], weights=outcome[valid], minlength=len(prompts))
    count = np.bincount(position[valid], minlength=len(prompts)).astype(float)
    rates = np.concatenate([score[index].sum(axis=1) / np.maximum(count[index].sum(axis=1), 1e-300) for index in indices]) \
        if len(prompts) else np.full(0, np.nan)
    rates[~np.isfinite(rates)] = np.nan
    n = int(valid.sum())
    low, high = percentile_ci(rates) if n else (None, None)
    judged = valid & (rows["reason"].to_numpy(dtype=object) != "identical_answers")
    stats = {
        "wins": int((outcome == 1).sum()), "ties": int((outcome == 0.5).sum()), "losses": int((outcome == 0).sum()),
        "win_rate": float(outcome[valid].mean()) if n else None, "ci_low": low, "ci_high": high, "n": n,
        "prompts": int((count > 0).sum()), "judge_errors": int((~valid).sum()),
        "lc_win_rate": length_controlled(outcome, (rows["model_chars"] - rows["baseline_chars"]).to_numpy(float)),
    }
    for side in ("model", "baseline"):
        checked = rows[f"{side}_in_language"].dropna()
        stats[f"language_fidelity_{side}"] = float(checked.astype(bool).mean()) if len(checked) else None
        answered = rows[rows[f"{side}_answer"].notna()]
        stats[f"mean_chars_{side}"] = float(answered[f"{side}_chars"].mean()) if len(answered) else None
        stats[f"mean_tokens_{side}"] = float(answered[f"{side}_tokens"].mean()) if len(answered) else None
    if (rows["judge_type"] == "llm_judge").any():
        asked = judged & rows["position_inconsistent"].notna().to_numpy()
        stats["position_inconsistency"] = float(rows["position_inconsistent"].to_numpy(dtype=bool)[asked].mean()) if asked.any() else None
    reasons = pd.Series(rows["reason"].to_numpy(dtype=object))
    stats["reasons"] = {str(k): int(v) for k, v in reasons.dropna().value_counts().sort_index().items()}
    return stats, rates


def _bt(groups: dict[str, tuple[pd.DataFrame, np.ndarray]], prompts: pd.Index, indices: list[np.ndarray]) -> dict[str, dict]:
    """Bradley-Terry ratings of every model from its battles with the baseline (item 0)."""
    names = list(groups)
    per_prompt = np.zeros((len(prompts), len(names) + 1, len(names) + 1))
    for k, (rows, outcome) in enumerate(groups.values(), start=1):
        valid = np.isfinite(outcome)
        position = prompts.get_indexer(rows["prompt_id"])[valid]
        np.add.at(per_prompt, (position, k, 0), outcome[valid])
        np.add.at(per_prompt, (position, 0, k), 1 - outcome[valid])
    point = _rating(bradley_terry(per_prompt.sum(axis=0)))
    samples = np.concatenate([_rating(bradley_terry(per_prompt[index].sum(axis=1))) for index in indices]) \
        if len(prompts) else np.zeros((0, len(names) + 1))
    result = {}
    for k, name in enumerate(names, start=1):
        finite = bool(np.isfinite(point[k]))
        low, high = percentile_ci(samples[:, k]) if finite else (None, None)
        result[name] = {"bt_rating": float(point[k]) if finite else None, "bt_ci_low": low, "bt_ci_high": high}
    return result


def summarize(judgments: pd.DataFrame, *, baseline: str, models: list[str], judges: list[str],
              wrong_language: str = "lose", bootstrap: int = 1000, seed: int = 0) -> dict:
    """The summary.json payload (see the module doc); the first judge's statistics are the headline
    `overall` / `macro` / `languages` of each model, every judge's are under `judges`."""
    summary: dict = {"baseline": baseline, "judge": judges[0] if judges else None, "judges": judges,
                     "wrong_language": wrong_language, "bootstrap": bootstrap, "seed": seed,
                     "models": {name: {"judges": {}} for name in models}}
    if judgments.empty:
        judgments = judgments.assign(final=[])
    outcome, reason = final_outcomes(judgments, wrong_language)
    judgments = judgments.assign(final=outcome, reason=reason, language=judgments["language"].fillna("und"))
    for judge in judges:
        mine = judgments[judgments["judge"] == judge]
        scopes = [("overall", mine)] + [(language, part) for language, part in mine.groupby("language", sort=True)]
        for scope, part in scopes:
            prompts = pd.Index(sorted(part["prompt_id"].unique()))
            indices = list(bootstrap_indices(len(prompts), bootstrap, f"{judge}/{scope}", seed)) if len(prompts) else []
            groups = {}
            for name in models:
                rows = part[part["model"] == name]
                stats, rates = _group_stats(rows, rows["final"].to_numpy(float), prompts, indices)
                entry = summary["models"][name]["judges"].setdefault(judge, {"languages": {}, "_rates": {}})
                if scope == "overall":
                    entry["overall"] = stats
                else:
                    entry["languages"][scope], entry["_rates"][scope] = stats, rates
                groups[name] = (rows, rows["final"].to_numpy(float))
            if len(models) >= 2 and len(prompts):  # three or more models with the baseline
                for name, ratings in _bt(groups, prompts, indices).items():
                    target = summary["models"][name]["judges"][judge]
                    (target["overall"] if scope == "overall" else target["languages"][scope]).update(ratings)
        for name in models:
            entry = summary["models"][name]["judges"][judge]
            rates = entry.pop("_rates")
            values = [s["win_rate"] for s in entry["languages"].values() if s["win_rate"] is not None]
            stacked = np.column_stack([rates[k] for k, s in entry["languages"].items() if s["win_rate"] is not None]) \
                if values else np.zeros((0, 0))
            low, high = percentile_ci(np.nanmean(stacked, axis=1)) if values else (None, None)
            entry["macro"] = {"win_rate": float(np.mean(values)) if values else None, "ci_low": low, "ci_high": high,
                              "languages": len(values)}
            entry.setdefault("overall", _group_stats(judgments.iloc[:0], np.zeros(0), pd.Index([]), [])[0])
    for name in models:
        entry = summary["models"][name]
        if judges:
            headline = entry["judges"][judges[0]]
            entry.update({"overall": headline["overall"], "macro": headline["macro"], "languages": headline["languages"]})
    return summary
