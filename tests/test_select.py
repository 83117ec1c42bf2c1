"""Selectors: exact agreement with the per-prompt reference, the papers' definitions on worked
examples, every edge case with its reason, and invariants of every method under hypothesis."""
import itertools
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from prefsynth.select import METHODS, select
from prefsynth.select.ampo import objective
from prefsynth.select.reference import METHODS as REFERENCE_METHODS, reference_select

PARAMS = {  # every method with non-default options where it has them
    "best_worst": {}, "mu_sigma": {"rejected_k": -1.0}, "sweet_spot_scalable": {"m": 2},
    "margin": {"min_margin": 0.5, "max_margin": 2.0}, "rso": {"m": 4, "beta": 1.0},
    "ampo_bottomk": {"k": 2}, "ampo_coreset": {"k": 2}, "ampo_optselect": {"k": 2}, "mpo": {},
}
LISTWISE = {"ampo_bottomk", "ampo_coreset", "ampo_optselect", "mpo"}


def table(rows, embeddings=None):
    """rows: (prompt_id, candidate_id, score[, keep[, text]])."""
    columns = {
        "prompt_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
        "score": pa.array([r[2] for r in rows], pa.float64()),
        "keep": [r[3] if len(r) > 3 else True for r in rows],
    }
    if any(len(r) > 4 for r in rows):
        columns["text"] = [r[4] if len(r) > 4 else f"{r[0]}:{r[1]}" for r in rows]
    if embeddings is not None:
        columns["embedding"] = pa.array([list(map(float, e)) for e in embeddings], pa.list_(pa.float64()))
    return pa.table(columns)


def one_prompt(scores, prompt="p", **kwargs):
    return table([(prompt, f"c{i}", s) for i, s in enumerate(scores)], **kwargs)


def dropped(selection):
    return dict(zip(selection.dropped["prompt_id"].to_pylist(), selection.dropped["reason"].to_pylist()))


# ---------------------------------------------------------------------------------------- hypothesis data

SCORES = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), st.floats(-5, 5, allow_nan=False, width=32),
                   st.just(math.nan), st.none())


@st.composite
def candidate_sets(draw):
    rows, embeddings = [], []
    for p in range(draw(st.integers(1, 6))):
        for c in range(draw(st.integers(0, 9))):
            text = draw(st.sampled_from(["same", "other", None, f"u{p}.{c}", f"v{p}.{c}"]))
            rows.append({"prompt_id": f"p{p}", "candidate_id": f"c{c:02d}" if c % 3 else f"z{c}",
                         "score": draw(SCORES), "keep": draw(st.sampled_from([True, True, True, False, None])),
                         "text": text})
            embeddings.append([draw(st.floats(-1, 1, width=32)) for _ in range(3)])
    order = draw(st.permutations(range(len(rows))))
    frame = pd.DataFrame([rows[i] for i in order], columns=["prompt_id", "candidate_id", "score", "keep", "text"])
    frame["embedding"] = [embeddings[i] for i in order]
    prompts = [f"p{p}" for p in range(7)]  # p6 (and any empty prompt) has no candidates
    return pa.Table.from_pandas(frame, preserve_index=False), prompts


def _rows(selection):
    out = selection.selected.to_pylist()
    for row in out:
        for key in ("selector", "n_usable"):
            row.pop(key)
    return out


@pytest.mark.parametrize("ties", ["lowest_id", "random"])
@pytest.mark.parametrize("method", sorted(REFERENCE_METHODS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=candidate_sets(), seed=st.integers(0, 3))
def test_vectorised_selectors_equal_the_per_prompt_reference(method, ties, data, seed):
    candidates, prompts = data
    params = PARAMS[method]
    fast = select(candidates, method, seed=seed, ties=ties, prompt_ids=prompts, **params)
    slow = reference_select(candidates, method, seed=seed, ties=ties, prompt_ids=prompts, **params)
    expected = slow["lists" if method in LISTWISE else "pairs"]
    assert _rows(fast) == expected
    assert dropped(fast) == slow["dropped"]


def random_candidates(prompts, per_prompt, seed=0):
    """Continuous random scores, a few NaNs and filtered rows: what benchmarks/select.py uses, smaller."""
    rng = np.random.default_rng(seed)
    n = prompts * per_prompt
    scores = rng.normal(size=n)
    scores[rng.random(n) < 0.02] = np.nan
    return pa.table({
        "prompt_id": np.repeat([f"prompt-{i:07d}" for i in range(prompts)], per_prompt),
        "candidate_id": [f"cand-{i:02d}" for i in range(per_prompt)] * prompts,
        "score": scores, "keep": rng.random(n) > 0.02,
    })


@pytest.mark.parametrize("method", sorted(REFERENCE_METHODS))
def test_vectorised_selectors_equal_the_reference_on_many_prompts(method):
    candidates = random_candidates(2000, 16, seed=1)
    params = dict(PARAMS[method], rejected_k=-2.0) if method == "mu_sigma" else PARAMS[method]
    params = dict(params, max_margin=1.0) if method == "margin" else params
    fast = select(candidates, method, seed=5, **params)
    slow = reference_select(candidates, method, seed=5, **params)
    assert _rows(fast) == slow["lists" if method in LISTWISE else "pairs"]
    assert dropped(fast) == slow["dropped"]


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=candidate_sets(), seed=st.integers(0, 3), ties=st.sampled_from(["lowest_id", "random"]))
def test_invariants_of_every_method(method, data, seed, ties):
    candidates, prompts = data
    selection = select(candidates, method, seed=seed, ties=ties, prompt_ids=prompts, **PARAMS[method])
    frame = candidates.to_pandas()
    usable = frame[(frame.keep != False) & np.isfinite(frame.score.astype(float))]  # noqa: E712
    owner = dict(zip(usable.candidate_id + "@" + usable.prompt_id, usable.score.astype(float)))
    rows = selection.selected.to_pylist()
    selected_prompts = [r["prompt_id"] for r in rows]
    for row in rows:
        if method in LISTWISE:
            chosen, rejected = row["chosen_ids"], row["rejected_ids"]
            chosen_scores, rejected_scores = row["chosen_scores"], row["rejected_scores"]
            assert len(set(chosen)) == len(chosen) and len(set(rejected)) == len(rejected)
            assert not set(chosen) & set(rejected)
            if method != "mpo":
                assert len(chosen) == 1 and 1 <= len(rejected) <= PARAMS[method]["k"]
        else:
            chosen, rejected = [row["chosen_id"]], [row["rejected_id"]]
            chosen_scores, rejected_scores = [row["chosen_score"]], [row["rejected_score"]]
            assert row["margin"] == row["chosen_score"] - row["rejected_score"]
        assert min(chosen_scores) > max(rejected_scores)  # every chosen beats every rejected of its row
        for cid, value in zip(chosen + rejected, chosen_scores + rejected_scores):
            assert owner[f"{cid}@{row['prompt_id']}"] == value  # a usable candidate of this very prompt
    if method != "rso":
        assert len(selected_prompts) == len(set(selected_prompts))
    accounted = set(selected_prompts) | set(selection.dropped["prompt_id"].to_pylist())
    assert not set(selected_prompts) & set(selection.dropped["prompt_id"].to_pylist())
    assert len(selection.dropped) == len(set(selection.dropped["prompt_id"].to_pylist()))
    assert accounted == set(prompts)  # every prompt exactly once
    again = select(candidates, method, seed=seed, ties=ties, prompt_ids=prompts, **PARAMS[method])
    assert again.selected.equals(selection.selected) and again.dropped.equals(selection.dropped)
    shuffled = candidates.take(pa.array(np.random.default_rng(seed).permutation(candidates.num_rows)))
    moved = select(shuffled, method, seed=seed, ties=ties, prompt_ids=prompts, **PARAMS[method])
    assert moved.selected.equals(selection.selected)  # row order never matters


# ------------------------------------------------------------------------------------- worked examples

def test_best_worst_picks_extremes_and_breaks_ties_by_lowest_candidate_id():
    pairs = select(table([("p", "c3", 1.0), ("p", "c1", 1.0), ("p", "c2", -1.0), ("p", "c0", -1.0)]), "best_worst").pairs
    row = pairs.to_pylist()[0]
    assert (row["chosen_id"], row["rejected_id"], row["margin"]) == ("c1", "c0", 2.0)


def test_seeded_random_ties_vary_with_the_seed_and_repeat_with_it():
    candidates = one_prompt([1.0] * 6 + [0.0])
    chosen = {select(candidates, "best_worst", ties="random", seed=s).pairs["chosen_id"][0].as_py() for s in range(30)}
    assert len(chosen) >= 4 and "c6" not in chosen
    assert select(candidates, "best_worst", ties="random", seed=7).pairs.equals(
        select(candidates, "best_worst", ties="random", seed=7).pairs)


def test_mu_sigma_rejects_the_candidate_nearest_mu_minus_two_sigma():
    scores = np.random.default_rng(0).normal(size=64)
    pairs = select(one_prompt(scores), "mu_sigma").pairs.to_pylist()[0]
    mu, sigma = scores.mean(), scores.std()  # population sigma (ddof=0)
    expected = int(np.argmin(np.abs(scores - (mu - 2 * sigma))))
    assert pairs["rejected_id"] == f"c{expected}" and pairs["chosen_id"] == f"c{int(np.argmax(scores))}"
    assert pairs["rejected_id"] != f"c{int(np.argmin(scores))}"  # not simply the worst
    chosen = select(one_prompt(scores), "mu_sigma", chosen_k=1.0).pairs["chosen_id"][0].as_py()
    assert chosen == f"c{int(np.argmin(np.abs(scores - (mu + sigma))))}"


def test_mu_sigma_never_emits_the_same_candidate_on_both_sides():
    same = select(one_prompt([0.0, 1.0, 2.0, 3.0]), "mu_sigma", rejected_k=0.1, chosen_k=0.05)
    assert same.pairs.num_rows == 0 and dropped(same) == {"p": "chosen_not_above_rejected"}
    assert "same candidate" in same.dropped["detail"][0].as_py()
    below = select(one_prompt([0.0, 1.0, 2.0, 3.0]), "mu_sigma", rejected_k=0.1, chosen_k=0.0)  # 1 (tie 1|2) vs 2
    assert dropped(below) == {"p": "chosen_not_above_rejected"}
    assert below.dropped["detail"][0].as_py() == "chosen score 1 <= rejected score 2"


def test_sweet_spot_scalable_draws_m_from_the_rest_seeded():
    scores = list(range(10))  # c9 is the best
    rejected = [select(one_prompt(scores), "sweet_spot_scalable", m=1, seed=s).pairs.to_pylist()[0] for s in range(400)]
    assert {r["chosen_id"] for r in rejected} == {"c9"}
    counts = pd.Series([r["rejected_id"] for r in rejected]).value_counts()
    assert set(counts.index) == {f"c{i}" for i in range(9)}  # m=1: uniform over the 9 others
    assert counts.max() < 80 and counts.min() > 20
    lowest = [select(one_prompt(scores), "sweet_spot_scalable", m=5, seed=s).pairs["rejected_id"][0].as_py() for s in range(200)]
    # the lowest of 5 drawn from 9: P(c0 drawn) = 5/9; the worst possible draw is c4
    assert 0.4 < lowest.count("c0") / 200 < 0.7 and set(lowest) <= {f"c{i}" for i in range(5)}
    everything = select(one_prompt(scores), "sweet_spot_scalable", m=50)  # more than exist: all of the rest
    assert everything.pairs["rejected_id"][0].as_py() == "c0"


def test_margin_takes_highest_chosen_then_margin_nearest_the_band_middle():
    candidates = one_prompt([10.0, 8.0, 7.0, 3.0, 9.5])
    row = select(candidates, "margin", min_margin=1.0, max_margin=3.0).pairs.to_pylist()[0]
    # chosen 10 (highest with an in-band partner): margins 2 (8), 3 (7), 0.5 out of band; middle 2 -> c1
    assert (row["chosen_id"], row["rejected_id"], row["margin"]) == ("c0", "c1", 2.0)
    inclusive = select(candidates, "margin", min_margin=3.0, max_margin=3.0).pairs.to_pylist()[0]
    assert (inclusive["chosen_id"], inclusive["rejected_id"]) == ("c0", "c2")  # the band's ends count
    floor = select(candidates, "margin", min_margin=1.0, max_margin=3.0, min_chosen=10.5)
    assert dropped(floor) == {"p": "no_pair_in_band"} and floor.pairs.num_rows == 0
    narrow = select(candidates, "margin", min_margin=6.0, max_margin=6.5).pairs.to_pylist()[0]
    assert (narrow["chosen_id"], narrow["rejected_id"]) == ("c4", "c3")  # 10 - 3 = 7 is out of band


def test_margin_instruction_filter_drops_prompts_judges_disagree_on():
    candidates = table([("calm", f"c{i}", float(i)) for i in range(4)] + [("torn", f"c{i}", float(i)) for i in range(4)])
    candidates = candidates.rename_columns(["prompt_id", "candidate_id", "ensemble_score", "keep"])
    candidates = candidates.append_column("ensemble_variance", pa.array([0.1] * 4 + [0.1, 0.1, 2.0, 3.0]))
    selection = select(candidates, "margin", score="ensemble_score", max_margin=3.0, max_variance=1.0)
    assert selection.pairs["prompt_id"].to_pylist() == ["calm"]
    assert dropped(selection) == {"torn": "judge_variance_above_max"}
    assert "1.3" in selection.dropped["detail"][0].as_py()  # mean variance (0.1+0.1+2+3)/4
    with pytest.raises(ValueError, match="variance_column"):
        select(candidates.rename_columns(["prompt_id", "candidate_id", "rm", "keep", "v"]), "margin", score="rm",
               max_margin=3.0, max_variance=1.0)
    with pytest.raises(ValueError, match="max_margin"):
        select(candidates, "margin", score="ensemble_score")  # the band's top is required


def test_rso_follows_algorithm_1_in_its_limits():
    scores = [0.3, 2.0, 1.0, -1.0, 0.5, 1.5]
    greedy = select(one_prompt(scores), "rso", beta=1e-9, m=4).pairs.to_pylist()
    # beta -> 0: only the best remaining is ever accepted, so acceptance = descending score
    assert [(p["chosen_id"], p["rejected_id"], p["pair_index"]) for p in greedy] == [("c1", "c5", 0), ("c2", "c4", 1)]
    uniform = select(one_prompt(scores), "rso", beta=1e12, m=6).pairs.to_pylist()
    # beta -> inf: everything accepted in the first round, in iteration (candidate_id) order
    assert [(p["chosen_id"], p["rejected_id"]) for p in uniform] == [("c1", "c0"), ("c2", "c3"), ("c5", "c4")]
    few = select(one_prompt([1.0, 0.0, 0.5]), "rso", m=8).pairs  # m > n: never more than exist
    assert few.num_rows == 1
    tied = select(one_prompt([1.0, 1.0, 0.0]), "rso", beta=1e-9, m=2)
    assert dropped(tied) == {"p": "rso_pairs_tied"}  # 1st and 2nd accepted tie: no pair


def test_rso_acceptance_rate_matches_exp_r_minus_rmax_over_beta():
    # two candidates, both accepted in the end; the worse ("a", first in iteration order) is accepted
    # first exactly when round 1 accepts it, which Algorithm 1 does with probability exp((0 - 1) / beta)
    beta = 0.5
    frame = table([(f"p{i}", "a", 0.0) for i in range(3000)] + [(f"p{i}", "b", 1.0) for i in range(3000)])
    pairs = select(frame, "rso", beta=beta, m=2).pairs
    assert pairs.num_rows == 3000 and set(pairs["chosen_id"].to_pylist()) == {"b"}
    from prefsynth.select.groups import prepare
    from prefsynth.select.rso import accept

    groups = prepare(frame, "score").groups
    position = accept(groups, beta, 2)
    worse_first = np.mean(position[groups.score == 0.0] == 0)
    assert worse_first == pytest.approx(math.exp(-1 / beta), abs=0.03)


def test_ampo_bottomk_takes_the_k_lowest_and_copes_with_fewer():
    lists = select(one_prompt([5.0, 1.0, 3.0, 0.0, 4.0, 2.0]), "ampo_bottomk", k=3).lists.to_pylist()[0]
    assert lists["chosen_ids"] == ["c0"] and lists["rejected_ids"] == ["c3", "c1", "c5"]
    short = select(one_prompt([5.0, 1.0]), "ampo_bottomk", k=3).lists.to_pylist()[0]
    assert short["rejected_ids"] == ["c1"]
    tied_best = select(one_prompt([5.0, 5.0, 1.0]), "ampo_bottomk", k=3).lists.to_pylist()[0]
    assert tied_best["chosen_ids"] == ["c0"] and tied_best["rejected_ids"] == ["c2"]  # a tie with the best is no negative


def _blobs(seed=0):
    """A best answer and three well-separated clusters of worse answers."""
    rng = np.random.default_rng(seed)
    centers = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    points, scores = [[5.0, 5.0, 5.0]], [10.0]
    for c in centers:
        for _ in range(4):
            points.append(c + rng.normal(scale=0.1, size=3))
            scores.append(float(rng.uniform(0, 5)))
    return np.array(points), np.array(scores)


def test_ampo_coreset_takes_the_lowest_scored_member_of_each_cluster():
    points, scores = _blobs()
    for seed in range(5):
        lists = select(one_prompt(scores, embeddings=points), "ampo_coreset", k=3, seed=seed).lists.to_pylist()[0]
        expected = {f"c{1 + 4 * b + int(np.argmin(scores[1 + 4 * b: 5 + 4 * b]))}" for b in range(3)}
        assert lists["chosen_ids"] == ["c0"] and set(lists["rejected_ids"]) == expected
        assert lists["rejected_scores"] == sorted(lists["rejected_scores"])


def test_ampo_optselect_is_locally_optimal_and_finds_the_optimum_on_clusters():
    points, scores = _blobs(1)
    rest = np.arange(1, len(scores))
    weights = np.exp(scores.mean() - scores[rest])
    best = min(itertools.combinations(range(len(rest)), 3), key=lambda s: objective(points[rest], weights, s))
    lists = select(one_prompt(scores, embeddings=points), "ampo_optselect", k=3).lists.to_pylist()[0]
    found = [int(c[1:]) - 1 for c in lists["rejected_ids"]]
    assert objective(points[rest], weights, found) == pytest.approx(objective(points[rest], weights, best))
    rng = np.random.default_rng(3)
    for trial in range(20):
        pts, sc = rng.normal(size=(7, 2)), rng.normal(size=7)
        lists = select(one_prompt(sc, embeddings=pts), "ampo_optselect", k=2, seed=trial).lists.to_pylist()[0]
        rest = [i for i in range(7) if sc[i] < sc.max()]
        w = np.exp(sc.mean() - sc[rest])
        chosen = [rest.index(int(c[1:])) for c in lists["rejected_ids"]]
        value = objective(pts[rest], w, chosen)
        for slot, other in itertools.product(range(2), range(len(rest))):  # no single swap improves it
            if other not in chosen:
                swapped = chosen.copy()
                swapped[slot] = other
                assert value <= objective(pts[rest], w, swapped) + 1e-9


def test_mpo_splits_at_the_mean_with_distance_weights():
    lists = select(one_prompt([4.0, 0.0, 1.0, 3.0]), "mpo").lists.to_pylist()[0]  # mean 2
    assert lists["chosen_ids"] == ["c0", "c3"] and lists["rejected_ids"] == ["c1", "c2"]
    assert lists["weights"] == [2.0, 1.0, 2.0, 1.0]


# ------------------------------------------------------------------------------------------ edge cases

def test_edge_cases_each_get_a_reason():
    candidates = table([
        ("nan", "a", math.nan), ("nan", "b", None), ("nan", "c", 1.0),  # missing scores are ignored
        ("one", "a", 1.0),
        ("flat", "a", 0.5), ("flat", "b", 0.5), ("flat", "c", 0.5),
        ("filtered", "a", 1.0, False), ("filtered", "b", 0.0),
        ("dup", "a", 1.0, True, "same"), ("dup", "b", 0.0, True, "same"),
        ("ok", "a", 1.0), ("ok", "b", math.nan), ("ok", "c", 0.0),
    ])
    for method in METHODS:
        params = dict(PARAMS[method], max_margin=5.0) if method == "margin" else PARAMS[method]
        extra = {"embedding": [[0.0, 1.0]] * candidates.num_rows} if method in ("ampo_coreset", "ampo_optselect") else {}
        data = candidates.append_column("embedding", pa.array(extra["embedding"])) if extra else candidates
        selection = select(data, method, prompt_ids=["nan", "one", "flat", "filtered", "dup", "ok", "none"], **params)
        assert dropped(selection) == {
            "nan": "too_few_candidates", "one": "too_few_candidates", "flat": "no_spread",
            "filtered": "too_few_candidates", "dup": "too_few_candidates", "none": "no_candidates",
        }, method
        assert selection.selected["prompt_id"].to_pylist() == ["ok"], method
    details = dict(zip(*[selection.dropped[c].to_pylist() for c in ("prompt_id", "detail")]))
    assert details["nan"] == "1 usable of 3 (0 filtered out, 2 without a score)"
    assert details["dup"] == "1 usable of 2 (0 filtered out, 0 without a score, 1 duplicate texts)"
    assert "sigma = 0" in details["flat"]


def test_duplicate_texts_count_once_in_the_statistics():
    candidates = table([("p", "a", 3.0, True, "x"), ("p", "b", 3.0, True, "x"), ("p", "c", 3.0, True, "x"),
                        ("p", "d", 0.0, True, "y")])
    row = select(candidates, "mu_sigma", rejected_k=-0.5).pairs.to_pylist()[0]
    # usable 3.0 and 0.0 (mean 1.5, sigma 1.5): target 0.75 picks d; with a, b, c all counted
    # (mean 2.25, sigma 1.3) the target 1.6 would pick a
    assert row["n_usable"] == 2 and row["rejected_id"] == "d"
    lists = select(candidates, "mpo").lists.to_pylist()[0]
    assert lists["chosen_ids"] == ["a"] and lists["rejected_ids"] == ["d"]


def test_min_margin_drops_pairs_at_or_below_it():
    candidates = table([("small", "a", 1.0), ("small", "b", 0.8), ("big", "a", 2.0), ("big", "b", 0.0)])
    for method in ("best_worst", "mu_sigma", "sweet_spot_scalable", "rso"):
        selection = select(candidates, method, min_margin=0.5)
        assert selection.pairs["prompt_id"].to_pylist() == ["big"], method
        assert dropped(selection) == {"small": "margin_below_min"}, method


def test_bad_input_names_the_row_field_or_option():
    good = one_prompt([1.0, 0.0])
    with pytest.raises(ValueError, match="no column 'rm'"):
        select(good, "best_worst", score="rm")
    with pytest.raises(ValueError, match="appears twice"):
        select(table([("p", "a", 1.0), ("p", "a", 0.0)]), "best_worst")
    with pytest.raises(ValueError, match="row 1: 'prompt_id' is null"):
        select(pa.table({"prompt_id": ["p", None], "candidate_id": ["a", "b"], "score": [1.0, 0.0]}), "best_worst")
    with pytest.raises(ValueError, match="must be numeric"):
        select(pa.table({"prompt_id": ["p"], "candidate_id": ["a"], "score": ["high"]}), "best_worst")
    with pytest.raises(ValueError, match="unknown selector method 'top2'"):
        select(good, "top2")
    with pytest.raises(ValueError, match="rso: m: Input should be greater than or equal to 2"):
        select(good, "rso", m=1)
    with pytest.raises(ValueError, match="Extra inputs"):
        select(good, "mu_sigma", sigma_k=-2)
    with pytest.raises(ValueError, match="no embedding column"):
        select(good, "ampo_coreset")
    ragged = good.append_column("embedding", pa.array([[0.0, 1.0], None]))
    with pytest.raises(ValueError, match="candidate 'c1': 'embedding' is missing"):
        select(ragged, "ampo_optselect")


def test_pandas_input_and_empty_input():
    frame = pd.DataFrame({"prompt_id": ["p", "p"], "candidate_id": ["a", "b"], "score": [0.0, 1.0]})
    assert select(frame, "best_worst").pairs["chosen_id"].to_pylist() == ["b"]
    empty = select(frame.iloc[:0], "mu_sigma", prompt_ids=["x"])
    assert empty.pairs.num_rows == 0 and dropped(empty) == {"x": "no_candidates"}


# ------------------------------------------------------------------------------------------ pipeline YAML

def test_every_method_is_one_yaml_line_in_the_pipeline(tmp_path):
    from prefsynth import config
    from tests.conftest import demo_config, write_config

    for method in METHODS:
        selector = {"method": method} | ({"max_margin": 2.0} if method == "margin" else {})
        judges = demo_config()["judges"] + ([{"type": "embedding"}] if "ampo_" in method and method != "ampo_bottomk" else [])
        loaded = config.load(write_config(tmp_path / f"{method}.yaml", demo_config(selector=selector, judges=judges)))
        assert loaded.selector.method == method and loaded.selector.score == "rm_score_raw"
        assert loaded.selector.seed == 0  # the pipeline's seed
    plain = config.load(write_config(tmp_path / "none.yaml", demo_config(selector={"score": "rm_score_raw"}, seed=7)))
    assert plain.selector.method == "best_worst" and plain.selector.seed == 7


def test_selector_yaml_errors_point_at_the_field(tmp_path):
    from prefsynth import config
    from tests.conftest import demo_config, write_config

    with pytest.raises(config.ConfigError) as error:
        config.load(write_config(tmp_path / "margin.yaml", demo_config(selector={"method": "margin", "beta": 1})))
    text = str(error.value)
    assert "selector.max_margin: Field required" in text and "selector.beta: unknown option" in text
    with pytest.raises(config.ConfigError, match="add a judge `{type: embedding, name: embedding}`"):
        config.load(write_config(tmp_path / "coreset.yaml", demo_config(selector={"method": "ampo_coreset"})))
    with pytest.raises(config.ConfigError, match="selector: Input tag 'top2' found"):
        config.load(write_config(tmp_path / "bad.yaml", demo_config(selector={"method": "top2"})))
