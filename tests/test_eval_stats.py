"""Eval statistics and outcome rules, against independent computations (no models)."""
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from prefsynth.engine import request_seed
from prefsynth.eval.compare import pairwise_outcomes, reward_outcomes
from prefsynth.eval.decontaminate import TrainingIndex, ngram_hashes
from prefsynth.eval.stats import bradley_terry, length_controlled, summarize

VERDICTS = st.sampled_from(["A", "B", "tie", None])


@given(st.lists(st.tuples(VERDICTS, VERDICTS), min_size=1, max_size=30))
def test_swapping_the_models_maps_wins_to_losses(pairs):
    model_first = np.array([a for a, _ in pairs], dtype=object)
    baseline_first = np.array([b for _, b in pairs], dtype=object)
    outcome, inconsistent, _ = pairwise_outcomes(model_first, baseline_first)
    # with the models swapped, the order that had the model first now has it second
    swapped, swapped_inconsistent, _ = pairwise_outcomes(baseline_first, model_first)
    np.testing.assert_array_equal(np.isnan(outcome), np.isnan(swapped))
    np.testing.assert_allclose(swapped[~np.isnan(outcome)], 1 - outcome[~np.isnan(outcome)])
    np.testing.assert_array_equal(inconsistent, swapped_inconsistent)


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=30), st.lists(st.floats(-5, 5), min_size=1, max_size=30),
       st.floats(0, 1))
def test_swapping_reward_scores_maps_wins_to_losses(a, b, margin):
    n = min(len(a), len(b))
    a, b = np.array(a[:n]), np.array(b[:n])
    outcome, _ = reward_outcomes(a, b, margin)
    swapped, _ = reward_outcomes(b, a, margin)
    np.testing.assert_allclose(swapped, 1 - outcome)
    assert set(outcome[(a - b) > margin]) <= {1.0} and set(outcome[np.abs(a - b) <= margin]) <= {0.5}


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 40))
def test_a_judge_that_always_prefers_the_first_position_gives_only_ties(n):
    outcome, inconsistent, reason = pairwise_outcomes(np.array(["A"] * n, dtype=object), np.array(["A"] * n, dtype=object))
    assert (outcome == 0.5).all() and inconsistent.all() and set(reason) == {"position_inconsistent"}
    judgments = _judgments(outcome, inconsistent, reason, judge_type="llm_judge")
    stats = summarize(judgments, baseline="base", models=["m"], judges=["llm"], bootstrap=20)["models"]["m"]["overall"]
    assert stats["position_inconsistency"] == 1.0 and stats["wins"] == stats["losses"] == 0 and stats["win_rate"] == 0.5


def test_unreadable_verdicts_are_errors_not_ties():
    outcome, inconsistent, reason = pairwise_outcomes(np.array(["A", None, "B"], dtype=object),
                                                      np.array(["B", "A", None], dtype=object))
    assert outcome[0] == 1.0 and np.isnan(outcome[1:]).all() and not inconsistent.any()
    stats = summarize(_judgments(outcome, inconsistent, np.array(["x", "judge_error:invalid_json", "judge_error:invalid_json"],
                                                                 dtype=object)),
                      baseline="base", models=["m"], judges=["rm"], bootstrap=20)["models"]["m"]["overall"]
    assert stats["n"] == 1 and stats["judge_errors"] == 2 and stats["win_rate"] == 1.0


def _judgments(outcome, inconsistent=None, reason=None, *, languages=None, prompts=None, model="m", judge_type="reward_model",
               chars=None, judge=None):
    n = len(outcome)
    languages = languages if languages is not None else ["fr"] * n
    chars = chars if chars is not None else np.zeros(n)
    return pd.DataFrame({
        "judge": judge or ("llm" if judge_type == "llm_judge" else "rm"), "judge_type": judge_type, "model": model,
        "baseline": "base", "prompt_id": prompts if prompts is not None else [f"p{i}" for i in range(n)],
        "language": languages, "sample_index": 0, "model_answer": "a", "baseline_answer": "b",
        "model_tokens": 5, "baseline_tokens": 5, "model_chars": 100 + np.asarray(chars), "baseline_chars": 100,
        "model_in_language": True, "baseline_in_language": True,
        "judge_outcome": np.asarray(outcome, float),
        "position_inconsistent": inconsistent if inconsistent is not None else np.zeros(n, bool),
        "reason": reason if reason is not None else np.full(n, None, dtype=object),
    })


def test_bootstrap_ci_equals_an_independent_resampling():
    rng = np.random.default_rng(5)
    outcome = rng.choice([0.0, 0.5, 1.0], size=40, p=[0.3, 0.2, 0.5])
    languages = np.repeat(["de", "fr"], 20)
    judgments = _judgments(outcome, languages=languages)
    summary = summarize(judgments, baseline="base", models=["m"], judges=["rm"], bootstrap=300, seed=7)
    stats = summary["models"]["m"]
    for scope, mask in (("overall", slice(None)), ("de", languages == "de")):
        values = outcome[mask]
        prompt_ids = np.array([f"p{i}" for i in range(40)])[mask]
        order = np.argsort(prompt_ids)  # prompts are resampled in sorted-id order
        values = values[order]
        draws = np.random.default_rng(request_seed(7, f"rm/{scope}"))
        index = np.concatenate([draws.integers(0, len(values), (min(64, 300 - s), len(values))) for s in range(0, 300, 64)])
        low, high = np.percentile(values[index].mean(axis=1), [2.5, 97.5])
        got = stats["overall"] if scope == "overall" else stats["languages"][scope]
        assert got["win_rate"] == pytest.approx(values.mean())
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high))
        assert got["ci_low"] <= got["win_rate"] <= got["ci_high"]
    assert stats["macro"]["win_rate"] == pytest.approx(np.mean([outcome[:20].mean(), outcome[20:].mean()]))
    assert stats["wins"] if False else stats["overall"]["wins"] == int((outcome == 1).sum())


def test_length_controlled_win_rate_matches_a_direct_statsmodels_fit():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    difference = rng.normal(0, 200, 120)
    p = 1 / (1 + np.exp(-(0.3 + 1.2 * np.tanh(difference / difference.std()))))
    outcome = (rng.random(120) < p).astype(float)
    outcome[:10] = 0.5
    direct = sm.GLM(outcome, sm.add_constant(np.tanh(difference / difference.std())), family=sm.families.Binomial()).fit()
    assert length_controlled(outcome, difference) == pytest.approx(1 / (1 + math.exp(-direct.params[0])))
    # longer answers win here, so controlling for length lowers the win-rate of the longer side
    longer = np.abs(difference) + 1
    assert length_controlled(np.where(rng.random(120) < 0.8, 1.0, 0.0), longer) is not None
    stats = summarize(_judgments(outcome, chars=difference), baseline="base", models=["m"], judges=["rm"], bootstrap=20)
    assert stats["models"]["m"]["overall"]["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-direct.params[0])))


def test_bradley_terry_matches_a_direct_maximum_likelihood_fit():
    from scipy.optimize import minimize

    wins = np.array([[0, 7, 3, 5], [4, 0, 6, 2], [9, 5, 0, 4], [3, 8, 6, 0]], float)

    def negative_log_likelihood(theta):
        beta = np.concatenate([[0.0], theta])
        logits = beta[:, None] - beta[None, :]
        return -(wins * -np.logaddexp(0, -logits)).sum()

    direct = minimize(negative_log_likelihood, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(bradley_terry(wins)[1:], direct, atol=1e-5)
    assert bradley_terry(wins[None])[0, 1:] == pytest.approx(direct, abs=1e-5)  # batched


def test_bradley_terry_ratings_with_three_models():
    rng = np.random.default_rng(3)
    frames = [_judgments(rng.choice([0.0, 0.5, 1.0], 30, p=p), model=name)
              for name, p in (("strong", [0.2, 0.1, 0.7]), ("weak", [0.6, 0.1, 0.3]))]
    summary = summarize(pd.concat(frames, ignore_index=True), baseline="base", models=["strong", "weak"], judges=["rm"],
                        bootstrap=50)
    strong, weak = (summary["models"][m]["overall"] for m in ("strong", "weak"))
    assert strong["bt_rating"] > 1000 > weak["bt_rating"]
    # only battles against the baseline: each rating is the Elo transform of that model's win-rate
    assert strong["bt_rating"] == pytest.approx(1000 + 400 * math.log10(strong["win_rate"] / (1 - strong["win_rate"])), abs=1e-4)
    assert strong["bt_ci_low"] <= strong["bt_rating"] <= strong["bt_ci_high"]


def test_wrong_language_loses_unless_both_are_wrong():
    judgments = _judgments(np.array([1.0, 1.0, 0.0, 0.5]))
    judgments["model_in_language"] = [False, False, True, True]
    judgments["baseline_in_language"] = [True, False, False, True]
    stats = summarize(judgments, baseline="base", models=["m"], judges=["rm"], bootstrap=20)["models"]["m"]["overall"]
    assert (stats["wins"], stats["ties"], stats["losses"]) == (2, 1, 1)  # lost, judge, won, judge
    assert stats["language_fidelity_model"] == 0.5 and stats["language_fidelity_baseline"] == 0.5
    ignored = summarize(judgments, baseline="base", models=["m"], judges=["rm"], bootstrap=20, wrong_language="ignore")
    assert ignored["models"]["m"]["overall"]["wins"] == 2 and ignored["models"]["m"]["overall"]["losses"] == 1


def test_decontamination_finds_planted_overlaps_and_nothing_else():
    training = ["The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat today",
                "Explain photosynthesis to a child.", "日本の首都はどこですか教えてください今すぐお願いします"]
    index = TrainingIndex.__new__(TrainingIndex)
    hashes, rows = ngram_hashes(pa.array(training), 13)
    order = np.argsort(hashes)
    index.hashes, index.rows, index.n, index.ids = hashes[order], rows[order], 13, ["t0", "t1", "t2"]
    evals = [
        "Please: the QUICK brown fox jumps over the lazy dog, while the cat sleeps on the warm mat!",  # 13-gram, case/punct
        "explain photosynthesis to a child",  # a short prompt, the same after normalisation
        "Explain photosynthesis to a teenager.",  # short, different
        "The quick brown fox jumps over the lazy dog while the cat naps",  # shares only 11 words in a row
        "ねえ、日本の首都はどこですか教えてください",  # characters: 18 in a row shared
        "日本の首都はどこですか、今すぐお願いします",  # 11 in a row: not enough
        "",
    ]
    assert index.matches(pa.array(evals)) == ["t0", "t1", None, None, "t2", None, None]
