"""LLM-as-judge (rubrics, verdict parsing, pair-wise reconciliation, the real vLLM path),
calibration, ensembles and the agreement report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsynth.config import Calibration, ConfigError, Ensemble, LlmJudge, parse
from prefsynth.judges import rubrics
from prefsynth.judges.calibrate import Calibrate, combine, language_stats, output_column, prompt_z
from prefsynth.judges.llm import LlmJudgeScore, Verdict, reconcile
from prefsynth.stages import ShardInput
from tests.conftest import demo_config

OVERALL = rubrics.verdict_schema("overall", "pointwise", 100)
PAIRWISE = rubrics.verdict_schema("overall", "pairwise", 100)
UF = rubrics.verdict_schema("ultrafeedback", "pointwise", 100)


# ----------------------------------------------------------------------------- verdict parsing
@pytest.mark.parametrize(
    "text, finish, reason",
    [
        ('{"rationale": "good", "score": 7}', "stop", None),
        ("", "stop", "empty_output"),
        ('{"rationale": "good", "sco', "length", "truncated"),
        ("not json", "stop", "invalid_json"),
        ("[1, 2]", "stop", "wrong_shape"),
        ('{"rationale": "good"}', "stop", "missing:score"),
        ('{"rationale": "good", "score": 11}', "stop", "out_of_range:score"),
        ('{"rationale": "good", "score": 0}', "stop", "out_of_range:score"),
        ('{"rationale": "good", "score": 7.5}', "stop", "out_of_range:score"),
        ('{"rationale": "good", "score": true}', "stop", "out_of_range:score"),
        ('{"rationale": 3, "score": 7}', "stop", "wrong_shape:rationale"),
    ],
)
def test_parse_verdict_names_what_is_wrong(text, finish, reason):
    fields, why = rubrics.parse_verdict(text, OVERALL, finish)
    assert why == reason
    assert (fields is None) == (reason is not None)
    if fields:
        assert fields == {"rationale": "good", "score": 7}


def test_pairwise_and_aspect_schemas():
    assert rubrics.parse_verdict('{"rationale": "x", "verdict": "B"}', PAIRWISE)[0]["verdict"] == "B"
    assert rubrics.parse_verdict('{"rationale": "x", "verdict": "C"}', PAIRWISE)[1] == "out_of_range:verdict"
    good = {"rationale": "x", "instruction_following": 5, "honesty": 4, "truthfulness": 3, "helpfulness": 2}
    assert rubrics.parse_verdict(json.dumps(good), UF)[0] == good
    assert rubrics.parse_verdict(json.dumps(good | {"honesty": 6}), UF)[1] == "out_of_range:honesty"
    assert list(UF["properties"])[0] == "rationale"  # the judge reasons before it scores


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_verdict_never_raises_and_never_invents_a_score(text):
    fields, reason = rubrics.parse_verdict(text, OVERALL, "stop")
    assert (fields is None) != (reason is None)
    if fields is not None:
        assert 1 <= fields["score"] <= 10 and json.loads(text)["score"] == fields["score"]


# ----------------------------------------------------------------------------- rubric text
def test_in_language_rubric_uses_the_registry_template_and_marks_fallbacks():
    hindi = rubrics.pointwise_request("overall", "prompt", "hi", "प्रश्न {x}", "उत्तर", OVERALL)
    content = hindi.messages[0]["content"]
    assert content.startswith("आकलन करें") and "प्रश्न {x}" in content and "उत्तर" in content
    assert hindi.note is None and "Rate" not in content
    english = rubrics.pointwise_request("overall", "en", "hi", "प्रश्न", "उत्तर", OVERALL)
    assert "Hindi" in english.messages[0]["content"] and english.note is None
    from prefsynth import langs

    fallback = next(code for code, record in langs.load().items() if record.templates and record.templates.fallback) \
        if any(r.templates and r.templates.fallback for r in langs.load().values()) else None
    if fallback:
        assert rubrics.pointwise_request("overall", "prompt", fallback, "q", "a", OVERALL).note == rubrics.FALLBACK_NOTE


def test_request_rendering_keeps_history_and_drops_the_system_prompt():
    one = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert rubrics.render_request(one) == "Q"
    many = one + [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]
    rendered = rubrics.render_request(many)
    assert "S" not in rendered and rendered.index("Q") < rendered.index("A") < rendered.index("Q2")


# ----------------------------------------------------------------------------- pair-wise
def _v(verdict):
    return Verdict({"rationale": "", "verdict": verdict}, None, "") if verdict else Verdict(None, "invalid_json", "{")


def test_reconcile_cancels_position_bias():
    # candidates 0, 1, 2: 0 beats 1 in both orders; 0 vs 2 the judge always says "A" (position);
    # 1 vs 2 one order unparseable
    orders = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
    verdicts = [_v("A"), _v("B"), _v("A"), _v("A"), _v("tie"), _v(None)]
    won, compared, disagreed, failures = reconcile(orders, verdicts, 3)
    assert compared.tolist() == [2, 1, 1]
    assert won.tolist() == [1.5, 0.0, 0.5]
    assert disagreed.tolist() == [1, 0, 1]
    assert failures[1].reason == "invalid_json" and failures[2].reason == "invalid_json"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["A", "B", "tie", None]), min_size=2, max_size=12).filter(lambda v: len(v) % 2 == 0))
def test_reconcile_conserves_points(verdict_names):
    pairs = len(verdict_names) // 2
    orders = [o for k in range(pairs) for o in ((2 * k, 2 * k + 1), (2 * k + 1, 2 * k))]
    won, compared, disagreed, _ = reconcile(orders, [_v(v) for v in verdict_names], 2 * pairs)
    assert won.sum() == pytest.approx(compared.sum() / 2)  # one point per compared pair
    assert (won <= compared).all() and (disagreed <= compared).all()
    always_first = [_v("A")] * len(orders)  # a judge that always picks position A learns nothing
    won, compared, disagreed, _ = reconcile(orders, always_first, 2 * pairs)
    assert (won == 0.5 * compared).all() and (disagreed == compared).all()


# ----------------------------------------------------------------------------- config
def _config(**overrides):
    return parse(demo_config(**overrides), base_dir=None)


def test_config_rules_for_judges_calibration_and_ensemble():
    judges = [
        {"type": "reward_model", "name": "rm", "model": "fixture:tiny-reward"},
        {"type": "llm_judge", "name": "uf", "model": "fixture:tiny-chat", "rubric": "ultrafeedback"},
    ]
    cfg = _config(judges=judges, ensemble={"columns": {"rm_score_raw": 1, "uf_helpfulness": 2}}, selector={})
    assert cfg.selector.score == "ensemble_score"
    cfg = _config(judges=judges, calibration=[{"column": "rm_score_raw", "method": "language_z"}],
                  selector={"score": "rm_score_language_z"})
    assert cfg.selector.score == "rm_score_language_z"
    bad = [
        ({"judges": judges, "ensemble": {"columns": {"rm_score_raw": 1, "nope": 1}}}, "not a judge column"),
        ({"judges": judges, "ensemble": {"columns": {"rm_score_raw": 1}}}, "at least two"),
        ({"judges": judges, "ensemble": {"columns": {"rm_score_raw": 1, "uf_score_raw": 2}, "method": "median"}},
         "median ignores weights"),
        ({"judges": judges, "calibration": [{"column": "x", "method": "prompt_z"}]}, "not a judge column"),
        ({"judges": judges[:1] + [judges[1] | {"rubric_language": "prompt"}]}, "rubric_language: prompt"),
        ({"judges": judges[:1] + [judges[1] | {"mode": "pairwise"}]}, "pairwise judges overall"),
        ({"judges": judges[:1] + [judges[1] | {"aspect_weights": {"fluency": 1}}]}, "not aspects"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            _config(selector={}, **overrides)


# ----------------------------------------------------------------------------- calibration
def _frame():
    return pd.DataFrame({
        "prompt_id": ["p1", "p1", "p1", "p2", "p2", "p3"],
        "language": ["en", "en", "en", "hi", "hi", "hi"],
        "rm_score_raw": [1.0, 2.0, 3.0, -5.0, None, -4.0],
        "llm_score_raw": [3.0, 9.0, 6.0, 2.0, 2.0, None],
    })


def test_prompt_z_is_a_population_z_score_per_prompt():
    frame = _frame()
    z = prompt_z(frame["rm_score_raw"], frame["prompt_id"])
    expected = (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3])
    assert np.allclose(z[:3], expected)
    assert z[3] == 0.0 and np.isnan(z[4]) and z[5] == 0.0  # one scored candidate: centre; null stays null


def _calibrate(frames, calibration, ensemble=None):
    """Fit on all shards together, then process each shard, as the executor does."""
    op = Calibrate(calibration, ensemble)
    whole = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
    if op.fit_columns():
        op.fit(whole.select(op.fit_columns()))
    tables = [op.process(None, ShardInput(0, None, pa.Table.from_pandas(f, preserve_index=False))).table for f in frames]
    return pa.concat_tables(tables).to_pandas()


def test_language_calibration_does_not_depend_on_sharding():
    frame = _frame()
    calibration = [Calibration(column="rm_score_raw", method=m) for m in ("language_z", "language_rank", "prompt_z")]
    one = _calibrate([frame], calibration)
    split = _calibrate([frame.iloc[:3], frame.iloc[3:5], frame.iloc[5:]], calibration)  # shards hold whole prompts
    pd.testing.assert_frame_equal(one, split)
    assert one["rm_score_raw"].equals(frame["rm_score_raw"])  # raw kept
    hi = frame["rm_score_raw"][3:].dropna()
    assert np.allclose(one["rm_score_language_z"][[3, 5]], (hi - hi.mean()) / hi.std(ddof=0))
    assert one["rm_score_language_rank"].tolist()[:3] == [0.0, 0.5, 1.0]
    assert one["rm_score_language_rank"][3] == 0.0 and one["rm_score_language_rank"][5] == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=30))
def test_language_rank_is_a_percentile_with_shared_ties(values):
    series = pd.Series(values)
    languages = pd.Series(["xx"] * len(values))
    from prefsynth.judges.calibrate import language_rank

    ranks = language_rank(series, languages, language_stats(series, languages))
    assert ranks.between(0, 1).all()
    expected = (series.rank(method="average") - 1) / max(len(values) - 1, 1) if len(values) > 1 else pd.Series([0.5])
    assert np.allclose(ranks, expected)


def test_ensemble_mean_median_and_variance():
    frame = _frame()
    ensemble = Ensemble(columns={"rm_score_raw": 1, "llm_score_raw": 3}, normalize="none")
    out = combine(ensemble, frame, {})
    assert out["ensemble_score"][0] == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert out["ensemble_variance"][0] == pytest.approx((1 * (1 - 2.5) ** 2 + 3 * (3 - 2.5) ** 2) / 4)
    assert out["ensemble_score"][4] == 2.0 and out["ensemble_judges"].tolist() == [2, 2, 2, 2, 1, 1]
    assert out["ensemble_variance"][4] == 0.0
    median = combine(Ensemble(columns={"rm_score_raw": 1, "llm_score_raw": 1}, method="median", normalize="none"), frame, {})
    assert median["ensemble_score"][1] == pytest.approx(5.5)
    z = _calibrate([frame], [], Ensemble(columns={"rm_score_raw": 1, "llm_score_raw": 1}))
    assert z["ensemble_score"][:3].sum() == pytest.approx(0.0)  # z-scores within p1 average to zero
    assert output_column("rm_score_raw", "prompt_z") == "rm_score_prompt_z"


# ----------------------------------------------------------------------------- the real vLLM judge
@pytest.fixture
def llm(tiny_chat_llm):
    return tiny_chat_llm


def _shard():
    prompts = pa.table({
        "prompt_id": ["p1", "p2"],
        "messages": [[{"role": "user", "content": "What is the capital of France?"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Nenne eine Farbe."}]],
    })
    texts = ["Paris is the capital of France.", "", "Paris.", "Rot.", "Blau ist eine Farbe. " * 200, "Grün."]
    candidates = pa.table({
        "candidate_id": [f"c{i}" for i in range(6)],
        "prompt_id": ["p1", "p1", "p1", "p2", "p2", "p2"],
        "language": ["en", "en", "en", "de", "de", "de"],
        "text": texts,
    })
    return ShardInput(0, prompts, candidates)


def _judge(**fields):
    return LlmJudge(**({"type": "llm_judge", "model": "fixture:tiny-chat", "max_tokens": 48, "max_rationale_chars": 20} | fields))


def test_pointwise_judge_scores_or_says_why(llm):
    judge = _judge(name="uf", rubric="ultrafeedback", aspect_weights={"helpfulness": 3, "honesty": 1})
    out = LlmJudgeScore(judge, seed=0).process(llm, _shard())
    frame = out.table.to_pandas()
    assert frame.loc[1, "uf_error"] == "empty_candidate" and pd.isna(frame.loc[1, "uf_output"])
    assert frame.loc[4, "uf_error"] == "judge_input_too_long" and "max_model_len 512" in frame.loc[4, "uf_output"]
    for _, row in frame.iterrows():
        assert pd.isna(row["uf_score_raw"]) == isinstance(row["uf_error"], str)
        if not pd.isna(row["uf_score_raw"]):
            expected = (3 * row["uf_helpfulness"] + row["uf_honesty"]) / 4
            assert row["uf_score_raw"] == pytest.approx(expected)
            assert pd.isna(row["uf_output"]) and isinstance(row["uf_rationale"], str)
        elif row["uf_error"] not in ("empty_candidate",):
            assert isinstance(row["uf_output"], str)  # the raw text is kept
    rejects = out.rejects.to_pandas()
    assert sorted(rejects["candidate_id"]) == sorted(frame.loc[frame["uf_error"].notna(), "candidate_id"])
    assert rejects["reason"].str.startswith("judge_verdict_missing:").all()


def test_pairwise_judge_compares_each_pair_in_both_orders(llm):
    out = LlmJudgeScore(_judge(name="pw", mode="pairwise", max_tokens=40), seed=0).process(llm, _shard())
    frame = out.table.to_pandas()
    assert frame.loc[1, "pw_error"] == "empty_candidate" and frame.loc[1, "pw_comparisons"] == 0
    assert frame["pw_comparisons"][[0, 2]].max() <= 1  # p1 has two non-empty candidates: one pair
    compared = frame["pw_comparisons"] > 0
    assert frame.loc[compared, "pw_score_raw"].between(0, 1).all()
    assert frame.loc[~compared, "pw_score_raw"].isna().all()
    assert frame.loc[~compared, "pw_error"].notna().all()


def test_truncated_verdicts_are_missing_not_defaulted(llm):
    out = LlmJudgeScore(_judge(name="t", max_tokens=16, max_rationale_chars=300), seed=0).process(llm, _shard())
    frame = out.table.to_pandas()
    asked = frame["t_error"].isin(["empty_candidate", "judge_input_too_long"]) == False  # noqa: E712
    assert (frame.loc[asked, "t_error"] == "truncated").all()  # 16 tokens cannot close a 300-char rationale
    assert frame["t_score_raw"].isna().all()


# ----------------------------------------------------------------------------- reward models
def test_reward_models_score_the_whole_conversation_system_prompt_and_history(tiny_models):
    from prefsynth.config import RewardModelJudge
    from prefsynth.generate.vllm_generate import chat_token_ids
    from prefsynth.judges.reward import RewardModelScore

    history = [{"role": "system", "content": "Réponds en français."},
               {"role": "user", "content": "Quelle est la capitale de la France ?"},
               {"role": "assistant", "content": "Paris."},
               {"role": "user", "content": "Et celle de l'Italie ?"}]
    prompts = pa.table({"prompt_id": ["multi", "last"], "messages": [history, history[-1:]]})
    candidates = pa.table({"candidate_id": ["a", "b"], "prompt_id": ["multi", "last"], "text": ["Rome.", "Rome."]})
    judge = RewardModelJudge(type="reward_model", name="rm", model="fixture:tiny-reward", backend="transformers",
                             device="cpu", engine={"dtype": "float32"})
    op = RewardModelScore(judge, seed=0)
    scorer = op.load()
    scores = op.process(scorer, ShardInput(0, prompts, candidates)).table["rm_score_raw"].to_numpy()
    full = chat_token_ids(scorer.tokenizer, [history + [{"role": "assistant", "content": "Rome."}]], add_generation_prompt=False)
    assert scores[0] == pytest.approx(scorer.score_ids(full, batch_size=1)[0], abs=1e-5)
    assert abs(scores[0] - scores[1]) > 1e-4  # the history changes the reward


def test_min_score_filter_keeps_or_drops_rows_without_a_score():
    from prefsynth.config import MinScoreFilter
    from prefsynth.filter.rules import apply_filters

    table = pa.table({"rm_score_raw": [1.0, 1.0, 1.0], "comet_score_raw": [0.9, 0.2, None]})
    keep = apply_filters(table, [MinScoreFilter(type="min_score", column="comet_score_raw", min=0.5)], "rm_score_raw")
    assert keep["keep"].to_pylist() == [True, False, True]
    assert keep["reason"].to_pylist()[1] == "below_min_score:comet_score_raw<0.5"
    strict = MinScoreFilter(type="min_score", column="comet_score_raw", min=0.5, keep_missing=False)
    assert apply_filters(table, [strict], "rm_score_raw")["keep"].to_pylist() == [True, False, False]
    with pytest.raises(ValueError, match="not in the candidates"):
        apply_filters(table, [MinScoreFilter(type="min_score", column="nope", min=0)], "rm_score_raw")


def test_comet_judge_scores_translated_answers_only():
    from prefsynth.config import CometJudge
    from prefsynth.judges.comet import CometScorer
    from prefsynth.judges.comet_stage import CometCandidateScore

    candidates = pa.table({
        "candidate_id": ["a", "b", "c"], "prompt_id": ["p", "p", "p"],
        "text": ["Le chat dort.", "Direct answer.", "Il pleut."],
        "source_text": ["The cat sleeps.", None, "It is raining."],
    })
    op = CometCandidateScore(CometJudge(type="comet", name="qe", model="fixture:tiny-comet-qe", batch_size=2))
    with op.load() as scorer:
        out = op.process(scorer, ShardInput(0, None, candidates)).table
        expected = scorer.score([{"src": "The cat sleeps.", "mt": "Le chat dort."}, {"src": "It is raining.", "mt": "Il pleut."}])
    scores = out["qe_score_raw"].to_pylist()
    assert scores[1] is None
    assert scores[0] == pytest.approx(expected[0], abs=1e-9) and scores[2] == pytest.approx(expected[1], abs=1e-9)


def test_agreement_report_per_language(tmp_path):
    import pyarrow.parquet as pq

    from prefsynth.report.agreement import agreement
    from prefsynth.runs import RunDir

    run = RunDir(tmp_path / "run")
    folder = run.stage("filter").path
    folder.mkdir(parents=True)
    frame = pd.DataFrame({
        "prompt_id": ["p1"] * 3 + ["p2"] * 3 + ["p3"] * 2,
        "language": ["en"] * 6 + ["hi"] * 2,
        "reason": [None, None, "wrong_language:en", None, None, None, "script_mismatch:Deva", None],
        "rm_score_raw": [1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 5.0, 1.0],
        "pw_score_raw": [0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0],
        "pw_comparisons": [2, 2, 2, 2, 2, 2, 1, 1],
        "pw_disagreements": [1, 0, 1, 0, 0, 0, 1, 1],
    })
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "shard-00000.parquet")
    report = agreement(run, "rm_score_raw", ["pw_score_raw"], ("pw",)).set_index("language")
    assert report.loc["en", "rho:pw"] == pytest.approx(0.0)  # +1 in p1, -1 in p2
    assert report.loc["en", "n:pw"] == 2 and report.loc["hi", "rho:pw"] == pytest.approx(1.0)
    assert report.loc["en", "rm_top_removed_by_lid"] == 0.5 and report.loc["hi", "rm_top_removed_by_lid"] == 1.0
    assert report.loc["en", "position_disagreement:pw"] == pytest.approx(2 / 12, abs=1e-4)  # rounded to 4 places
    assert report.loc["hi", "position_disagreement:pw"] == pytest.approx(1.0)
