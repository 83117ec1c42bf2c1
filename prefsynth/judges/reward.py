"""Reward-model judge: a sequence-classification checkpoint scores (prompt, response).

Scores are the raw logit (`{name}_score_raw`), never a sigmoid, so they stay comparable across
batches and backends. The conversation goes through the reward model's own chat template once
(token ids), and both backends score exactly those ids:
- vllm: the pooling runner (`LLM(runner="pooling")`, `encode(pooling_task="classify")`);
- transformers: AutoModelForSequenceClassification, length-sorted batches, for models vLLM
  cannot load.
Conversations longer than the model's context get a null score and a reject with the reason.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from prefsynth import schemas
from prefsynth.config import RewardModelJudge
from prefsynth.engine import engine_key, make_llm, max_model_len
from prefsynth.generate.vllm_generate import chat_token_ids
from prefsynth.stages import Op, ShardInput, ShardOutput


def conversations(prompts: pa.Table, candidates: pa.Table) -> list[list[dict]]:
    """Each candidate's full conversation: its prompt's messages + the assistant response."""
    by_id = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("messages").to_pylist()))
    return [
        by_id[pid] + [{"role": "assistant", "content": text}]
        for pid, text in zip(candidates.column("prompt_id").to_pylist(), candidates.column("text").to_pylist())
    ]


class TransformersRewardModel:
    """Minimal batched scorer on transformers, used as the `transformers` backend and as the
    reference the vLLM backend is tested against."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from prefsynth.models import materialize

        path = materialize(model)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self.max_length = getattr(self.model.config, "max_position_embeddings", None) or 10**9
        pad = self.tokenizer.pad_token_id
        # Batching pads; the model finds each sequence's last token through pad_token_id. Without
        # a distinct pad token that would be ambiguous, so score one sequence at a time then.
        self.can_batch = pad is not None and pad != self.tokenizer.eos_token_id
        if self.can_batch:
            self.model.config.pad_token_id = pad

    def get_tokenizer(self):
        return self.tokenizer

    def score_ids(self, token_ids: list[list[int]], batch_size: int) -> np.ndarray:
        import torch

        scores = np.full(len(token_ids), np.nan)
        order = np.argsort([len(ids) for ids in token_ids], kind="stable")
        step = batch_size if self.can_batch else 1
        with torch.inference_mode():
            for start in range(0, len(order), step):
                rows = order[start : start + step]
                width = max(len(token_ids[i]) for i in rows)
                pad = self.tokenizer.pad_token_id if self.can_batch else 0
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids[r, : len(token_ids[i])] = torch.tensor(token_ids[i])
                    mask[r, : len(token_ids[i])] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                scores[rows] = logits[:, 0].float().cpu().numpy()
        return scores


def vllm_scores(llm: Any, token_ids: list[list[int]]) -> np.ndarray:
    from vllm import PoolingParams
    from vllm.inputs import TokensPrompt

    if not token_ids:
        return np.zeros(0)
    outputs = llm.encode(
        [TokensPrompt(prompt_token_ids=ids) for ids in token_ids],
        pooling_params=PoolingParams(use_activation=False),  # raw logits, not sigmoid
        pooling_task="classify",
        use_tqdm=False,
    )
    return np.array([float(out.outputs.data.reshape(-1)[0]) for out in outputs])


class RewardModelScore(Op):
    uses_model = True

    def __init__(self, judge: RewardModelJudge, seed: int):
        self.judge, self.seed = judge, seed

    def config(self) -> dict:
        return {"judge": self.judge.model_dump(mode="json"), "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "RewardModelScore":
        return cls(RewardModelJudge.model_validate(config["judge"]), config["seed"])

    def load(self) -> Any:
        if self.judge.backend == "transformers":
            return TransformersRewardModel(self.judge.model, self.judge.device, self.judge.engine.dtype)
        return make_llm(self.judge.model, self.judge.engine, seed=self.seed, runner="pooling")

    def load_key(self) -> str:
        if self.judge.backend == "transformers":
            return json.dumps({"transformers": self.judge.model, "device": self.judge.device, "dtype": self.judge.engine.dtype})
        return engine_key(self.judge.model, self.judge.engine, seed=self.seed, runner="pooling")

    def process(self, scorer: Any, shard: ShardInput) -> ShardOutput:
        candidates = shard.table
        token_ids = chat_token_ids(
            scorer.get_tokenizer(), conversations(shard.prompts, candidates), add_generation_prompt=False
        )
        limit = scorer.max_length if isinstance(scorer, TransformersRewardModel) else max_model_len(scorer)
        fits = np.array([len(ids) <= limit for ids in token_ids], dtype=bool)
        fit_ids = [ids for ids, ok in zip(token_ids, fits) if ok]
        if isinstance(scorer, TransformersRewardModel):
            fit_scores = scorer.score_ids(fit_ids, self.judge.batch_size)
        else:
            fit_scores = vllm_scores(scorer, fit_ids)
        scores = np.full(len(token_ids), np.nan)
        scores[fits] = fit_scores
        column = pa.array(scores, pa.float64(), mask=~fits)
        table = candidates.append_column(self.judge.score_column, column)
        too_long = np.flatnonzero(~fits)
        rejects = schemas.rejects_table([
            {"stage": f"judge.{self.judge.name}", "prompt_id": candidates.column("prompt_id")[i].as_py(),
             "candidate_id": candidates.column("candidate_id")[i].as_py(), "reason": "judge_input_too_long",
             "detail": f"{len(token_ids[i])} tokens > {limit} of {self.judge.model}; score left null"}
            for i in too_long
        ])
        return ShardOutput(table, rejects, {"scored": int(fits.sum())})
