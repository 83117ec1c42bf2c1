"""Eval stages: each answer's language, and each model's answers against the baseline's.

`language.<model>` marks every answer in or out of its prompt's language (the build's
language_id rule). `compare.<judge>.<model>` pairs the model's answer i to a prompt with the
baseline's answer i and writes one JUDGMENTS row per pair:
- reward_model: the judge's scores (stage `score.<judge>.<model>`, the build's reward-model
  stage) decide: win when score(model) - score(baseline) > tie_margin, loss when < -tie_margin;
- llm_judge: the pair is judged twice, model's answer as A and as B. Both orders name the same
  winner: that is the outcome; they disagree: a tie and a position inconsistency; either verdict
  unreadable (or the judge input over its context): a judge_error, never a tie or a win.
Identical answers are a tie without asking the judge. The outcome functions are pure (numpy),
so they are tested alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import schemas
from prefsynth.engine import engine_key, make_llm
from prefsynth.eval.config import AnswerLanguage, EvalLlmJudge, EvalRewardJudge
from prefsynth.filter.language import language_checks
from prefsynth.judges import rubrics
from prefsynth.stages import Op, ShardInput, ShardOutput

MODEL_WINS, TIE, BASELINE_WINS = 1.0, 0.5, 0.0


def reward_outcomes(model_score: np.ndarray, baseline_score: np.ndarray, tie_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, reason) per pair from two score arrays (NaN: no score, a judge_error)."""
    difference = np.asarray(model_score, float) - np.asarray(baseline_score, float)
    outcome = np.where(difference > tie_margin, MODEL_WINS, np.where(difference < -tie_margin, BASELINE_WINS, TIE))
    missing = np.isnan(difference)
    outcome[missing] = np.nan
    reason = np.full(len(outcome), None, dtype=object)
    reason[(outcome == TIE) & ~missing] = "within_tie_margin"
    reason[missing] = "judge_error:no_score"
    return outcome, reason


def pairwise_outcomes(model_first: np.ndarray, baseline_first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outcome, position_inconsistent, reason) from both orders' verdicts ("A", "B", "tie", or
    None when unreadable): `model_first` judged (A=model, B=baseline), `baseline_first` the reverse."""
    first = np.asarray(model_first, dtype=object)
    second = np.asarray(baseline_first, dtype=object)
    # name each order's winner by side: 1 model, 0 baseline, 0.5 tie, NaN missing
    by_first = np.select([first == "A", first == "B", first == "tie"], [MODEL_WINS, BASELINE_WINS, TIE], np.nan)
    by_second = np.select([second == "B", second == "A", second == "tie"], [MODEL_WINS, BASELINE_WINS, TIE], np.nan)
    missing = np.isnan(by_first) | np.isnan(by_second)
    agree = (by_first == by_second) & ~missing
    outcome = np.where(agree, by_first, TIE)
    outcome[missing] = np.nan
    inconsistent = ~agree & ~missing
    reason = np.full(len(outcome), None, dtype=object)
    reason[agree & (outcome == TIE)] = "judge_tie"
    reason[inconsistent] = "position_inconsistent"
    return outcome, inconsistent, reason


class AnswerLanguageCheck(Op):
    """Adds `in_language` (null when the prompt has no language) and `lid_reason` to answers."""

    def __init__(self, rule: AnswerLanguage):
        self.rule = rule

    def config(self) -> dict:
        return {"rule": self.rule.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "AnswerLanguageCheck":
        return cls(AnswerLanguage.model_validate(config["rule"]))

    def process(self, resource: Any, shard: ShardInput) -> ShardOutput:
        table = shard.table
        failed, reason, columns = language_checks(self.rule, table)
        checked = pc.is_valid(table["language"])
        table = table.append_column("in_language", pc.if_else(checked, pc.invert(failed), pa.scalar(None, pa.bool_())))
        table = table.append_column("lid_reason", reason)
        for name, column in columns.items():
            table = table.append_column(name, column)
        return ShardOutput(table)


def paired_answers(shard: ShardInput, judge: str, judge_type: str, model: str, baseline: str, answers: tuple[int, int],
                   score: str | None = None) -> pa.Table:
    """The model's and the baseline's answers to each prompt side by side, as the leading
    JUDGMENTS columns. With `answers` = (n of the model, n of the baseline), comparison i of a
    prompt (i < max of the two) pairs the model's answer i mod n_model with the baseline's answer
    i mod n_baseline: several samples of a model all meet a greedy baseline's one answer. A side
    without an answer (its prompt was too long for that model) stays null; prompts neither side
    answered have no rows."""
    keep = ["prompt_id", "sample_index", "text", "completion_tokens", "in_language", "lid_reason"] + ([score] if score else [])
    renamed = {"text": "answer", "completion_tokens": "tokens", "lid_reason": "lid", score: "score"}

    def side(table: pa.Table, prefix: str) -> pa.Table:
        table = table.select(keep)
        return table.rename_columns([{"prompt_id": "prompt_id", "sample_index": f"{prefix}_index"}.get(c)
                                     or f"{prefix}_{renamed.get(c, c)}" for c in keep])

    prompts = shard.prompts
    count = max(answers)
    rank = np.repeat(np.arange(prompts.num_rows), count)
    pair = np.tile(np.arange(count, dtype=np.int32), prompts.num_rows)
    grid = pa.table({"prompt_id": pc.take(prompts["prompt_id"], pa.array(rank)), "sample_index": pair,
                     "model_index": pair % answers[0], "baseline_index": pair % answers[1], "_rank": rank})
    joined = grid.join(side(shard.context["model"], "model"), keys=["prompt_id", "model_index"], join_type="left outer")
    joined = joined.join(side(shard.context["baseline"], "baseline"), keys=["prompt_id", "baseline_index"],
                         join_type="left outer")
    joined = joined.filter(pc.or_(pc.is_valid(joined["model_answer"]), pc.is_valid(joined["baseline_answer"])))
    joined = joined.sort_by([("_rank", "ascending"), ("sample_index", "ascending")])  # joins do not keep order
    rank = joined["_rank"]
    requests = [rubrics.render_request(m) for m in prompts.column("messages").to_pylist()]
    n = joined.num_rows
    columns = {
        "judge": [judge] * n, "judge_type": [judge_type] * n, "model": [model] * n, "baseline": [baseline] * n,
        "language": pc.take(prompts["language"], rank),
        "prompt": pc.take(pa.array(requests, pa.string()), rank),
    }
    for name in joined.column_names:
        if name not in ("_rank", "model_index", "baseline_index"):
            columns[name] = joined[name]
    for prefix in ("model", "baseline"):
        columns[f"{prefix}_chars"] = pc.utf8_length(pc.fill_null(joined[f"{prefix}_answer"], ""))
    return pa.table(columns)


def _finish(table: pa.Table, outcome: np.ndarray, inconsistent: np.ndarray, reason: np.ndarray, **extra) -> pa.Table:
    """Identical answers tie; a missing answer is an error; then the JUDGMENTS schema."""
    model_answer = table["model_answer"].to_numpy(zero_copy_only=False)
    baseline_answer = table["baseline_answer"].to_numpy(zero_copy_only=False)
    no_model, no_baseline = pc.is_null(table["model_answer"]).to_numpy(zero_copy_only=False), \
        pc.is_null(table["baseline_answer"]).to_numpy(zero_copy_only=False)
    identical = ~no_model & ~no_baseline & (model_answer == baseline_answer)
    outcome, inconsistent, reason = outcome.copy(), inconsistent.copy(), reason.copy()
    outcome[identical], inconsistent[identical], reason[identical] = TIE, False, "identical_answers"
    for mask, why in ((no_model, "judge_error:no_answer:model"), (no_baseline, "judge_error:no_answer:baseline")):
        outcome[mask], inconsistent[mask], reason[mask] = np.nan, False, why
    columns = {name: table[name] for name in table.column_names} | extra
    columns["judge_outcome"] = pa.array(outcome, pa.float64(), mask=np.isnan(outcome))
    columns["position_inconsistent"] = pa.array(inconsistent, pa.bool_())
    columns["reason"] = pa.array(reason, pa.string())
    n = table.num_rows
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schemas.JUDGMENTS}).cast(schemas.JUDGMENTS)


class RewardComparison(Op):
    """compare.<judge>.<model> for a reward model: reads both sides' score stages (CPU only)."""

    def __init__(self, judge: EvalRewardJudge, model: str, baseline: str, answers: tuple[int, int]):
        self.judge, self.model, self.baseline, self.answers = judge, model, baseline, tuple(answers)

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json"), "model": self.model, "baseline": self.baseline,
                "answers": list(self.answers)}

    @classmethod
    def from_config(cls, config: dict) -> "RewardComparison":
        return cls(EvalRewardJudge.model_validate(config["judge"]), config["model"], config["baseline"], config["answers"])

    def process(self, resource: Any, shard: ShardInput) -> ShardOutput:
        table = paired_answers(shard, self.judge.name, "reward_model", self.model, self.baseline, self.answers,
                               self.judge.score_column)
        model_score = table["model_score"].to_numpy(zero_copy_only=False).astype(float)
        baseline_score = table["baseline_score"].to_numpy(zero_copy_only=False).astype(float)
        outcome, reason = reward_outcomes(model_score, baseline_score, self.judge.tie_margin)
        return ShardOutput(_finish(table, outcome, np.zeros(len(outcome), bool), reason))


class PairwiseComparison(Op):
    """compare.<judge>.<model> for an LLM judge: every pair judged in both orders on vLLM."""

    uses_model = True

    def __init__(self, judge: EvalLlmJudge, model: str, baseline: str, answers: tuple[int, int], seed: int):
        self.judge, self.model, self.baseline, self.answers, self.seed = judge, model, baseline, tuple(answers), seed

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json"), "model": self.model, "baseline": self.baseline,
                "answers": list(self.answers), "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "PairwiseComparison":
        return cls(EvalLlmJudge.model_validate(config["judge"]), config["model"], config["baseline"], config["answers"],
                   config["seed"])

    def load(self) -> Any:
        return make_llm(self.judge.model, self.judge.engine, seed=self.seed)

    def load_key(self) -> str:
        return engine_key(self.judge.model, self.judge.engine, seed=self.seed)

    def process(self, llm: Any, shard: ShardInput) -> ShardOutput:
        from prefsynth.judges.llm import ask

        table = paired_answers(shard, self.judge.name, "llm_judge", self.model, self.baseline, self.answers)
        schema = rubrics.verdict_schema("overall", "pairwise", self.judge.max_rationale_chars)
        model_answer = table["model_answer"].to_pylist()
        baseline_answer = table["baseline_answer"].to_pylist()
        ask_rows = [i for i, (a, b) in enumerate(zip(model_answer, baseline_answer)) if a is not None and b is not None and a != b]
        languages, prompts = table["language"].to_pylist(), table["prompt"].to_pylist()
        keys = [f"{p}/{s}" for p, s in zip(table["prompt_id"].to_pylist(), table["sample_index"].to_pylist())]
        requests, request_keys = [], []
        for i in ask_rows:  # adjacent: model's answer as A, then the baseline's as A
            for tag, first, second in (("model_first", model_answer[i], baseline_answer[i]),
                                       ("baseline_first", baseline_answer[i], model_answer[i])):
                requests.append(rubrics.pairwise_request(languages[i], prompts[i], first, second, schema))
                request_keys.append(f"{keys[i]}|{self.model}|{self.baseline}|{tag}")
        verdicts = ask(llm, self.judge, requests, schema, request_keys, self.seed)
        n = table.num_rows
        found = {"model_first": np.full(n, None, dtype=object), "baseline_first": np.full(n, None, dtype=object)}
        outputs = {"model_first": [None] * n, "baseline_first": [None] * n}
        errors = np.full(n, None, dtype=object)
        for k, i in enumerate(ask_rows):
            for offset, tag in enumerate(("model_first", "baseline_first")):
                verdict = verdicts[2 * k + offset]
                outputs[tag][i] = verdict.output
                if verdict.fields is not None:
                    found[tag][i] = verdict.fields["verdict"]
                elif errors[i] is None:
                    errors[i] = f"judge_error:{verdict.reason}"
        outcome, inconsistent, reason = pairwise_outcomes(found["model_first"], found["baseline_first"])
        reason = np.where(errors != None, errors, reason)  # noqa: E711
        extra = {"verdict_model_first": pa.array(found["model_first"], pa.string()),
                 "verdict_baseline_first": pa.array(found["baseline_first"], pa.string()),
                 "output_model_first": pa.array(outputs["model_first"], pa.string()),
                 "output_baseline_first": pa.array(outputs["baseline_first"], pa.string())}
        output = _finish(table, outcome, inconsistent, reason, **extra)
        failed = [i for i in range(n) if errors[i] is not None]
        rejects = schemas.rejects_table([
            {"stage": f"compare.{self.judge.name}.{self.model}", "prompt_id": keys[i].rsplit("/", 1)[0],
             "reason": errors[i], "detail": (outputs["model_first"][i] or outputs["baseline_first"][i] or "")[:500]}
            for i in failed])
        return ShardOutput(output, rejects, {"judged": len(ask_rows)})
