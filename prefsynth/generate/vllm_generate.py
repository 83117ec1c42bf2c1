"""In-language generation with vLLM: a shard of chat prompts, n samples each.

Every candidate row carries its provenance (prompt, language, model, sample index, sampling
parameters, seed and its scope, finish reason, token counts). Prompts longer than the model's
context are recorded as rejects with the reason, not fatal.
"""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import langs, schemas
from prefsynth.config import Generator
from prefsynth.engine import engine_key, generate_from_ids, make_llm, max_model_len, request_seed
from prefsynth.models import fingerprint
from prefsynth.stages import Op, ShardInput, ShardOutput


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
        self.model_fingerprint = fingerprint(generator.model)

    def config(self) -> dict:
        # a local model rewritten in place (iterate's policy) changes the stage hash; Hub ids add nothing
        extra = {"model_fingerprint": self.model_fingerprint} if self.model_fingerprint else {}
        generator = self.generator.model_dump(mode="json")
        if generator["seed_scope"] == "request":  # the default: stage hashes of earlier runs stay valid
            del generator["seed_scope"]
        return {"generator": generator, "seed": self.seed, **extra}

    @classmethod
    def from_config(cls, config: dict) -> "Generate":
        return cls(Generator.model_validate(config["generator"]), config["seed"])

    def load(self) -> Any:
        return make_llm(self.generator.model, self.generator.engine, seed=self.seed)

    def load_key(self) -> str:
        return engine_key(self.generator.model, self.generator.engine, seed=self.seed)

    def sampling_params(self, prompt_ids: list[str]):
        from vllm import SamplingParams

        g = self.generator
        base = dict(
            n=g.n, temperature=g.temperature, top_p=g.top_p, max_tokens=g.max_tokens,
            stop=list(g.stop) or None, ignore_eos=g.ignore_eos,
        )
        if g.seed_scope == "engine":  # the engine's seed (make_llm): samples depend on batching
            return SamplingParams(**base)
        return [SamplingParams(**base, seed=request_seed(self.seed, pid)) for pid in prompt_ids]

    def conversations(self, prompts: pa.Table) -> list[list[dict]]:
        """The prompts' messages, with the language's registry system prompt where configured."""
        conversations = prompts.column("messages").to_pylist()
        if self.generator.system_prompt == "registry":
            for messages, code in zip(conversations, prompts.column("language").to_pylist()):
                templates = langs.get(code).templates if code else None
                if templates is not None and messages[0]["role"] != "system":
                    messages.insert(0, {"role": "system", "content": templates.system_prompt})
        return conversations

    def routed(self, prompts: pa.Table) -> pa.Table:
        """Per-language routing: the prompts this generator serves."""
        if self.generator.languages is None:
            return prompts
        return prompts.filter(pc.fill_null(pc.is_in(prompts["language"], pa.array(self.generator.languages)), False))

    def process(self, llm: Any, shard: ShardInput) -> ShardOutput:
        prompts = self.routed(shard.prompts)
        if self.generator.strategy == "translate_completions":
            from prefsynth.generate.translated import answer_in_source_language

            return answer_in_source_language(self, llm, prompts, shard.context["source_prompts"])
        if self.generator.strategy == "diverse":
            from prefsynth.generate.diverse_stage import diverse_candidates

            return diverse_candidates(self, llm, prompts)
        return self.sample(llm, prompts)

    def fitting(self, llm: Any, prompts: pa.Table,
                conversations: list[list[dict]]) -> tuple[list[int], list[list[int]], list[dict]]:
        """Prompts that fit the context (one token of room to answer): their indices, their
        chat-templated token ids, and rejects for the rest."""
        g = self.generator
        limit = max_model_len(llm)
        token_ids = chat_token_ids(llm.get_tokenizer(), conversations, add_generation_prompt=True)
        prompt_ids = prompts.column("prompt_id").to_pylist()
        rejects = [
            {"stage": f"generate.{g.name}", "prompt_id": pid, "reason": "prompt_too_long",
             "detail": f"{len(ids)} prompt tokens >= max_model_len {limit} of {g.model}"}
            for pid, ids in zip(prompt_ids, token_ids) if len(ids) >= limit
        ]
        kept = [i for i, ids in enumerate(token_ids) if len(ids) < limit]
        return kept, [token_ids[i] for i in kept], rejects

    def params_json(self) -> str:
        g = self.generator
        return json.dumps(
            {"n": g.n, "temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens,
             "stop": list(g.stop), "ignore_eos": g.ignore_eos, "system_prompt": g.system_prompt,
             "strategy": g.strategy}, sort_keys=True,
        )

    def table(self, columns: dict[str, list], **constants: Any) -> pa.Table:
        """Candidates table from per-row columns; the generator's own provenance fills the rest."""
        g = self.generator
        rows = len(columns["candidate_id"])
        defaults = {
            "generator": g.name, "model": g.model, "strategy": g.strategy, "temperature": g.temperature,
            "top_p": g.top_p, "max_tokens": g.max_tokens, "seed_scope": g.seed_scope,
            "sampling_params": self.params_json(), "source_text": None, "translator": None, "note": None,
        }
        defaults.update(constants)
        for name, value in defaults.items():
            columns.setdefault(name, [value] * rows)
        return pa.table({name: columns[name] for name in schemas.CANDIDATES.names}, schema=schemas.CANDIDATES)

    def sample(self, llm: Any, prompts: pa.Table, **constants: Any) -> ShardOutput:
        """Plain sampling: n samples per prompt, the chat template applied once (fitting)."""
        g = self.generator
        conversations = self.conversations(prompts)
        prompt_ids = prompts.column("prompt_id").to_pylist()
        kept, token_ids, rejects = self.fitting(llm, prompts, conversations)
        outputs = generate_from_ids(llm, token_ids, self.sampling_params([prompt_ids[i] for i in kept]))
        languages = prompts.column("language").to_pylist()
        columns: dict[str, list] = {name: [] for name in (
            "candidate_id", "prompt_id", "language", "sample_index", "text", "finish_reason",
            "prompt_tokens", "completion_tokens", "seed")}
        for index, request in zip(kept, outputs):
            pid = prompt_ids[index]
            seed = request_seed(self.seed, pid) if g.seed_scope == "request" else self.seed
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
        table = self.table(columns, **constants)
        output_tokens = sum(columns["completion_tokens"])
        return ShardOutput(table, schemas.rejects_table(rejects), {"output_tokens": output_tokens})
