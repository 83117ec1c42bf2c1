"""LLM-as-judge on vLLM: point-wise scores (one rubric, one or several aspects) or pair-wise
comparisons judged in both orders.

Every verdict is constrained to a JSON schema (rubrics.py). A verdict that still cannot be read,
an empty candidate, or a judge conversation too long for the judge's context gives a null score,
the reason in `{name}_error`, the judge's raw text in `{name}_output`, and a reject record. Never
a default score: a missing verdict must not look like a mediocre one.

Pair-wise: each unordered pair of a prompt's candidates is judged as (A, B) and as (B, A). When
the two verdicts name the same winner (or both say tie) that is the result; when they disagree
the judge preferred a position, not a response, and the pair counts as a tie. A candidate's
score is the share of its comparisons it won (ties 0.5); `{name}_disagreements` counts the pairs
whose orders disagreed, so the disagreement rate is kept per candidate and per language.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from prefsynth import schemas
from prefsynth.config import LlmJudge
from prefsynth.engine import engine_key, generate_from_ids, make_llm, max_model_len, request_seed, structured_outputs
from prefsynth.generate.vllm_generate import chat_token_ids
from prefsynth.judges import rubrics
from prefsynth.stages import Op, ShardInput, ShardOutput


@dataclass
class Verdict:
    fields: dict | None  # parsed verdict, None when missing
    reason: str | None  # why it is missing
    output: str | None  # the judge's raw text (None when it was not asked)


def ask(llm: Any, judge: LlmJudge, requests: list[rubrics.JudgeRequest], schema: dict, keys: list[str], seed: int) -> list[Verdict]:
    """Send the judge conversations that fit the context in one batch; parse every answer."""
    from vllm import SamplingParams

    verdicts = [Verdict(None, None, None) for _ in requests]
    if not requests:
        return verdicts
    limit = max_model_len(llm)
    token_ids = chat_token_ids(llm.get_tokenizer(), [r.messages for r in requests], add_generation_prompt=True)
    sent = []
    for i, n in enumerate(map(len, token_ids)):
        if n + judge.max_tokens > limit:
            verdicts[i].reason = "judge_input_too_long"
            verdicts[i].output = f"{n} prompt tokens + max_tokens {judge.max_tokens} > max_model_len {limit}"
        else:
            sent.append(i)
    base = dict(n=1, temperature=judge.temperature, max_tokens=judge.max_tokens,
                structured_outputs=structured_outputs(schema))
    # Greedy verdicts need no seed.
    params = (SamplingParams(**base) if judge.temperature == 0
              else [SamplingParams(**base, seed=request_seed(seed, keys[i])) for i in sent])
    outputs = generate_from_ids(llm, [token_ids[i] for i in sent], params)
    for i, output in zip(sent, outputs):
        sample = output.outputs[0]
        fields, reason = rubrics.parse_verdict(sample.text, schema, str(sample.finish_reason))
        verdicts[i] = Verdict(fields, reason, sample.text)
    return verdicts


def aspect_score(judge: LlmJudge, fields: dict) -> float:
    aspects = rubrics.columns(judge.rubric)
    weights = judge.aspect_weights or {name: 1.0 for name in aspects}
    total = sum(weights.get(name, 0.0) for name in aspects)
    return sum(weights.get(name, 0.0) * fields[name] for name in aspects) / total


def reconcile(orders: list[tuple[int, int]], verdicts: list[Verdict], n: int):
    """Fold both-order verdicts into per-candidate results. `orders` lists (a, b) then (b, a) for
    each pair, adjacent; verdict fields hold "verdict": A, B or tie. Returns (won, compared,
    disagreed, first_failure): won counts 1 per win and 0.5 per tie; a pair whose two orders
    name different winners is a tie and a disagreement; a pair with a missing verdict is not
    compared, and its candidates remember that verdict (for their reason when nothing else counts)."""
    won, compared, disagreed = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    first_failure: dict[int, Verdict] = {}
    for k in range(0, len(orders), 2):
        (a, b), forward, backward = orders[k], verdicts[k], verdicts[k + 1]
        if orders[k + 1] != (b, a):
            raise ValueError(f"orders {k} and {k + 1} are not one pair in both orders")
        if forward.fields is None or backward.fields is None:
            failed = forward if forward.fields is None else backward
            for i in (a, b):
                first_failure.setdefault(i, failed)
            continue
        # forward judged (A=a, B=b), backward judged (A=b, B=a): name the winner by candidate
        first = {"A": a, "B": b, "tie": None}[forward.fields["verdict"]]
        second = {"A": b, "B": a, "tie": None}[backward.fields["verdict"]]
        compared[[a, b]] += 1
        if first == second and first is not None:
            won[first] += 1.0
        else:  # both say tie, or the judge followed the position: a tie either way
            won[[a, b]] += 0.5
            disagreed[[a, b]] += first != second
    return won, compared, disagreed, first_failure


class LlmJudgeScore(Op):
    uses_model = True

    def __init__(self, judge: LlmJudge, seed: int):
        self.judge, self.seed = judge, seed

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json"), "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "LlmJudgeScore":
        return cls(LlmJudge.model_validate(config["judge"]), config["seed"])

    def load(self) -> Any:
        return make_llm(self.judge.model, self.judge.engine, seed=self.seed)

    def load_key(self) -> str:
        return engine_key(self.judge.model, self.judge.engine, seed=self.seed)

    def process(self, llm: Any, shard: ShardInput) -> ShardOutput:
        candidates = shard.table
        by_id = dict(zip(shard.prompts.column("prompt_id").to_pylist(), shard.prompts.column("messages").to_pylist()))
        requests = [rubrics.render_request(by_id[pid]) for pid in candidates.column("prompt_id").to_pylist()]
        texts = candidates.column("text").to_pylist()
        if self.judge.mode == "pairwise":
            columns, failures = self.pairwise(llm, candidates, requests, texts)
        else:
            columns, failures = self.pointwise(llm, candidates, requests, texts)
        table = candidates
        for name, column in columns.items():
            table = table.drop_columns(name) if name in table.column_names else table
            table = table.append_column(name, column)
        ids = candidates.column("candidate_id").to_pylist()
        prompt_ids = candidates.column("prompt_id").to_pylist()
        rejects = schemas.rejects_table([
            {"stage": f"judge.{self.judge.name}", "prompt_id": prompt_ids[i], "candidate_id": ids[i],
             "reason": f"judge_verdict_missing:{reason}", "detail": (detail or "")[:500]}
            for i, reason, detail in failures
        ])
        scored = int(table[self.judge.score_column].null_count)
        return ShardOutput(table, rejects, {"scored": len(table) - scored})

    def pointwise(self, llm: Any, candidates: pa.Table, requests: list[str], texts: list[str]):
        judge = self.judge
        schema = rubrics.verdict_schema(judge.rubric, "pointwise", judge.max_rationale_chars)
        languages = candidates.column("language").to_pylist()
        ids = candidates.column("candidate_id").to_pylist()
        asked = [i for i, text in enumerate(texts) if text and text.strip()]
        built = [rubrics.pointwise_request(judge.rubric, judge.rubric_language, languages[i], requests[i], texts[i], schema)
                 for i in asked]
        verdicts = [Verdict(None, "empty_candidate", None) for _ in texts]
        for i, verdict in zip(asked, ask(llm, judge, built, schema, [ids[i] for i in asked], self.seed)):
            verdicts[i] = verdict
        notes = [None] * len(texts)
        for i, request in zip(asked, built):
            notes[i] = request.note
        aspects = rubrics.columns(judge.rubric)
        score = [aspect_score(judge, v.fields) if v.fields else None for v in verdicts]
        columns = {judge.score_column: pa.array(score, pa.float64())}
        if judge.rubric != "overall":
            for name in aspects:
                columns[f"{judge.name}_{name}"] = pa.array([float(v.fields[name]) if v.fields else None for v in verdicts], pa.float64())
        columns |= self._common(verdicts, notes)
        failures = [(i, v.reason, v.output) for i, v in enumerate(verdicts) if v.fields is None]
        return columns, failures

    def pairwise(self, llm: Any, candidates: pa.Table, requests: list[str], texts: list[str]):
        judge = self.judge
        schema = rubrics.verdict_schema("overall", "pairwise", judge.max_rationale_chars)
        languages = candidates.column("language").to_pylist()
        ids = candidates.column("candidate_id").to_pylist()
        groups: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(candidates.column("prompt_id").to_pylist()):
            if texts[i] and texts[i].strip():
                groups[pid].append(i)
        orders = [(a, b) for rows in groups.values() for x, a in enumerate(rows) for b in rows[x + 1:]]
        orders = [pair for a, b in orders for pair in ((a, b), (b, a))]  # both orders, adjacent
        built = [rubrics.pairwise_request(languages[a], requests[a], texts[a], texts[b], schema) for a, b in orders]
        keys = [f"{ids[a]}|{ids[b]}" for a, b in orders]
        answers = ask(llm, judge, built, schema, keys, self.seed)

        n = len(texts)
        won, compared, disagreed, first_failure = reconcile(orders, answers, n)
        verdicts = []
        for i in range(n):
            if compared[i]:
                verdicts.append(Verdict({"score": won[i] / compared[i]}, None, None))
            elif not (texts[i] and texts[i].strip()):
                verdicts.append(Verdict(None, "empty_candidate", None))
            elif i in first_failure:
                verdicts.append(Verdict(None, first_failure[i].reason, first_failure[i].output))
            else:
                verdicts.append(Verdict(None, "no_other_candidate", None))  # nothing to compare with
        columns = {
            judge.score_column: pa.array([v.fields["score"] if v.fields else None for v in verdicts], pa.float64()),
            f"{judge.name}_comparisons": pa.array(compared, pa.int32()),
            f"{judge.name}_disagreements": pa.array(disagreed, pa.int32()),
        }
        columns |= self._common(verdicts, [None] * n, rationale=False)
        failures = [(i, v.reason, v.output) for i, v in enumerate(verdicts) if v.fields is None]
        return columns, failures

    def _common(self, verdicts: list[Verdict], notes: list[str | None], rationale: bool = True) -> dict[str, pa.Array]:
        name = self.judge.name
        columns = {}
        if rationale:
            columns[f"{name}_rationale"] = pa.array([v.fields.get("rationale") if v.fields else None for v in verdicts], pa.string())
        columns[f"{name}_error"] = pa.array([v.reason for v in verdicts], pa.string())
        columns[f"{name}_output"] = pa.array([v.output if v.fields is None else None for v in verdicts], pa.string())
        columns[f"{name}_note"] = pa.array(notes, pa.string())
        return columns
