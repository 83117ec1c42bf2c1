import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from prefsynth.select.best_worst import best_worst


def _candidates(rows):
    return pa.table({
        "prompt_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
        "score": pa.array([r[2] for r in rows], pa.float64()), "keep": [r[3] for r in rows],
    })


def test_edge_cases_each_get_a_reason():
    table = _candidates([
        ("a", "a/0", 0.1, True), ("a", "a/1", 0.9, True), ("a", "a/2", 0.5, True), ("a", "a/3", 5.0, False),
        ("b", "b/0", 0.3, True),                      # one candidate
        ("c", "c/0", 0.2, True), ("c", "c/1", 0.2, True),  # tie
        ("d", "d/0", None, True), ("d", "d/1", 0.4, True),  # null score is unusable
        ("f", "f/0", 1.0, True), ("f", "f/1", 0.95, True),
    ])
    pairs, dropped = best_worst(table, ["a", "b", "c", "d", "e", "f"], "score", min_margin=0.0)
    assert pairs.column("prompt_id").to_pylist() == ["a", "f"]
    first = pairs.to_pylist()[0]
    assert (first["chosen_id"], first["rejected_id"]) == ("a/1", "a/0")  # a/3 is not kept
    assert np.isclose(first["margin"], 0.8)
    reasons = dict(zip(dropped["prompt_id"], dropped["reason"]))
    assert reasons == {"b": "too_few_candidates", "c": "all_tied", "d": "too_few_candidates", "e": "no_candidates"}
    details = dict(zip(dropped["prompt_id"], dropped["detail"]))
    assert details["d"] == "1 usable of 2"
    pairs, dropped = best_worst(table, ["a", "f"], "score", min_margin=0.1)
    assert pairs.column("prompt_id").to_pylist() == ["a"]
    assert dropped["reason"].tolist() == ["margin_below_min"]


def test_ties_break_by_candidate_id():
    table = _candidates([("a", "a/2", 1.0, True), ("a", "a/0", 1.0, True), ("a", "a/1", 0.0, True), ("a", "a/3", 0.0, True)])
    pair = best_worst(table, ["a"], "score")[0].to_pylist()[0]
    assert (pair["chosen_id"], pair["rejected_id"]) == ("a/0", "a/1")


rows = st.lists(
    st.tuples(st.sampled_from("pqrs"), st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)), st.booleans()),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_every_prompt_lands_once_and_pairs_are_extremes(data):
    table = _candidates([(p, f"{p}/{i}", s, k) for i, (p, s, k) in enumerate(data)])
    prompts = ["p", "q", "r", "s"]
    pairs, dropped = best_worst(table, prompts, "score")
    paired = pairs.column("prompt_id").to_pylist()
    assert sorted(paired + dropped["prompt_id"].tolist()) == prompts
    for pair in pairs.to_pylist():
        usable = [s for p, s, k in data if p == pair["prompt_id"] and k and s is not None]
        assert pair["chosen_score"] == max(usable) and pair["rejected_score"] == min(usable)
        assert pair["margin"] > 0 and pair["chosen_id"] != pair["rejected_id"]
