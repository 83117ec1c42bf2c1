"""In-language generation with vLLM: `LLM.chat` over a shard of prompts, n samples each.

Every candidate row carries its provenance (prompt, language, model, sample index, sampling
parameters, seed and its scope, finish reason, token counts). Prompts longer than the model's
context are recorded as rejects with the reason, not fatal.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from prefsynth import schemas
from prefsynth.config import Generator
from prefsynth.engine import make_llm, max_model_len, on_cpu
from prefsynth.stages import Op, ShardInput, ShardOutput


def request_seed(seed: int, prompt_id: str) -> int:
    """Per-prompt seed, so a prompt's samples do not depend on which shard or batch it lands in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:4], "little") >> 1


def chat_token_ids(tokenizer: Any, conversations: list[list[dict]], *, add_generation_prompt: bool) -> list[list[int]]:
    if not conversations:
        return []
    return tokenizer.apply_chat_template(
        conversations, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )


class Generate(Op):
    uses_model = True

    def __init__(self, generator: Generator, seed: int):
        self.generator = generator
        self.seed = generator.seed if generator.seed is not None else seed

    def config(self) -> dict:
        return {"generator": self.generator.model_dump(mode="json"), "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "Generate":
        return cls(Generator.model_validate(config["generator"]), config["seed"])

    def load(self) -> Any:
        return make_llm(self.generator.model, self.generator.engine, seed=self.seed)

    def sampling_params(self, prompt_ids: list[str], per_request_seed: bool):
        from vllm import SamplingParams

        g = self.generator
        base = dict(
            n=g.n, temperature=g.temperature, top_p=g.top_p, max_tokens=g.max_tokens,
            stop=list(g.stop) or None, ignore_eos=g.ignore_eos,
        )
        if not per_request_seed:
            return SamplingParams(**base)
        return [SamplingParams(**base, seed=request_seed(self.seed, pid)) for pid in prompt_ids]

    def process(self, llm: Any, shard: ShardInput) -> ShardOutput:
        g = self.generator
        prompts = shard.prompts
        conversations = prompts.column("messages").to_pylist()
        prompt_ids = prompts.column("prompt_id").to_pylist()
        limit = max_model_len(llm)
        lengths = [len(ids) for ids in chat_token_ids(llm.get_tokenizer(), conversations, add_generation_prompt=True)]
        fits = [n < limit for n in lengths]  # at least one token of room to answer
        rejects = [
            {"stage": f"generate.{g.name}", "prompt_id": pid, "reason": "prompt_too_long",
             "detail": f"{n} prompt tokens >= max_model_len {limit} of {g.model}"}
            for pid, n, ok in zip(prompt_ids, lengths, fits) if not ok
        ]
        kept = [i for i, ok in enumerate(fits) if ok]
        # vLLM on CPU rejects per-request seeds ("CPU Generator does not use offset"): there the
        # engine is seeded instead, and rows say so (seed_scope=engine).
        per_request_seed = not on_cpu()
        outputs = llm.chat(
            [conversations[i] for i in kept],
            self.sampling_params([prompt_ids[i] for i in kept], per_request_seed),
            use_tqdm=False,
        ) if kept else []
        params_json = json.dumps(
            {"n": g.n, "temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens,
             "stop": list(g.stop), "ignore_eos": g.ignore_eos}, sort_keys=True,
        )
        languages = prompts.column("language").to_pylist()
        columns: dict[str, list] = {name: [] for name in schemas.CANDIDATES.names}
        for index, request in zip(kept, outputs):
            pid = prompt_ids[index]
            seed = request_seed(self.seed, pid) if per_request_seed else self.seed
            for sample in request.outputs:
                columns["candidate_id"].append(f"{pid}/{g.name}/{sample.index}")
                columns["prompt_id"].append(pid)
                columns["language"].append(languages[index])
                columns["sample_index"].append(sample.index)
                columns["text"].append(sample.text)
                columns["finish_reason"].append(sample.finish_reason)
                columns["prompt_tokens"].append(len(request.prompt_token_ids))
                columns["completion_tokens"].append(len(sample.token_ids))
                columns["seed"].append(seed)
        rows = len(columns["candidate_id"])
        constant = {
            "generator": g.name, "model": g.model, "strategy": g.strategy, "temperature": g.temperature,
            "top_p": g.top_p, "max_tokens": g.max_tokens, "seed_scope": "request" if per_request_seed else "engine",
            "sampling_params": params_json,
        }
        for name, value in constant.items():
            columns[name] = [value] * rows
        table = pa.table(columns, schema=schemas.CANDIDATES)
        output_tokens = sum(columns["completion_tokens"])
        return ShardOutput(table, schemas.rejects_table(rejects), {"output_tokens": output_tokens})
