import pyarrow as pa

from prefsynth import schemas
from prefsynth.config import FinishReasonFilter, LengthFilter
from prefsynth.export.pairs import export_pairs
from prefsynth.filter.rules import apply_filters


def _candidates(texts, finish, scores, prompt="p1"):
    n = len(texts)
    return pa.table({
        "candidate_id": [f"{prompt}/g/{i}" for i in range(n)], "prompt_id": [prompt] * n, "language": ["en"] * n,
        "generator": ["g"] * n, "model": ["fixture:tiny-chat"] * n, "strategy": ["in_language"] * n,
        "sample_index": pa.array(range(n), pa.int32()), "text": texts, "finish_reason": finish,
        "prompt_tokens": pa.array([5] * n, pa.int32()), "completion_tokens": pa.array([len(t) for t in texts], pa.int32()),
        "temperature": [1.0] * n, "top_p": [1.0] * n, "max_tokens": pa.array([64] * n, pa.int32()),
        "seed": pa.array([0] * n, pa.int64()), "seed_scope": ["engine"] * n, "sampling_params": ['{"n": 4}'] * n,
        "rm_score_raw": pa.array(scores, pa.float64()),
    })


def test_filters_mark_first_failing_reason_and_keep_rows():
    table = _candidates(["fine answer", " ", "cut off", "way too long answer", "ok"], ["stop", "stop", "length", "stop", "stop"],
                        [0.1, 0.2, 0.3, 0.4, None])
    out = apply_filters(table, [FinishReasonFilter(type="finish_reason"), LengthFilter(type="length", min_chars=2, max_chars=12)], "rm_score_raw")
    assert out.num_rows == table.num_rows
    assert out["keep"].to_pylist() == [True, False, False, False, False]
    assert out["reason"].to_pylist() == [None, "too_short:<2_chars", "finish_reason:length", "too_long:>12_chars", "missing_score:rm_score_raw"]
    again = apply_filters(out, [], "rm_score_raw")  # rerunning replaces the columns
    assert again["keep"].to_pylist() == [True, True, True, True, False]


def test_export_joins_prompts_and_candidates_in_trl_format():
    candidates = pa.concat_tables([_candidates(["a0", "a1"], ["stop"] * 2, [1.0, -1.0], "p1"),
                                   _candidates(["b0", "b1"], ["stop"] * 2, [0.0, 2.0], "p2")])
    prompts = schemas.from_rows([
        {"prompt_id": "p2", "language": "fr", "messages": [{"role": "user", "content": "Q2"}], "source": "s", "source_row": 1, "source_id": None},
        {"prompt_id": "p1", "language": "en", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}], "source": "s", "source_row": 0, "source_id": "x"},
    ], schemas.PROMPTS)
    pairs = pa.Table.from_pylist([
        {"prompt_id": "p1", "chosen_id": "p1/g/0", "rejected_id": "p1/g/1", "chosen_score": 1.0, "rejected_score": -1.0, "margin": 2.0, "selector": "best_worst"},
        {"prompt_id": "p2", "chosen_id": "p2/g/1", "rejected_id": "p2/g/0", "chosen_score": 2.0, "rejected_score": 0.0, "margin": 2.0, "selector": "best_worst"},
    ], schema=schemas.PAIRS)
    out = export_pairs(pairs, candidates, prompts, "rm_score_raw")
    assert out.schema.equals(schemas.DATASET_PAIRS)
    rows = out.to_pylist()
    assert rows[0]["prompt"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "a0"}] and rows[0]["rejected"][0]["content"] == "a1"
    assert rows[1]["language"] == "fr" and rows[1]["chosen"][0]["content"] == "b1" and rows[1]["source_row"] == 1
    assert rows[1]["chosen_model"] == "fixture:tiny-chat" and rows[1]["chosen_tokens"] == 2
