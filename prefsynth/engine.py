"""Build a vLLM engine from an `Engine` config, with CPU-aware defaults.

Kept to engine construction only: batching and scheduling are vLLM's job.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from prefsynth import models
from prefsynth.config import Engine

CPU_MEMORY_FRACTION = 0.2  # vLLM's 0.92 default reserves nearly all RAM on a CPU machine
CPU_KV_CACHE_GIB = 1


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def make_llm(model: str, engine: Engine, *, seed: int, runner: str | None = None) -> Any:
    cpu = on_cpu()
    if cpu:
        # Read by vLLM's CPU worker when it starts: set before building the engine.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(engine.kv_cache_gib or CPU_KV_CACHE_GIB)
    from vllm import LLM

    kwargs: dict[str, Any] = dict(
        model=models.materialize(model),
        seed=seed,
        dtype=engine.dtype,
        tensor_parallel_size=engine.tensor_parallel_size,
        trust_remote_code=engine.trust_remote_code,
        enforce_eager=engine.enforce_eager,
        gpu_memory_utilization=engine.gpu_memory_utilization or (CPU_MEMORY_FRACTION if cpu else 0.9),
    )
    if engine.max_model_len is not None:
        kwargs["max_model_len"] = engine.max_model_len
    if engine.max_num_seqs is not None:
        kwargs["max_num_seqs"] = engine.max_num_seqs
    if runner is not None:
        kwargs["runner"] = runner
    if cpu:
        # vLLM samples with a per-request seed only when no prefill is split across steps (a
        # discarded partial-prefill sample rewinds the request's generator, which the CPU
        # generator cannot: "CPU Generator does not use offset"). Without chunked prefill every
        # request gets its own seeded generator, so samples do not depend on batching, sharding,
        # executor or restarts.
        kwargs["enable_chunked_prefill"] = False
    if engine.tensor_parallel_size > 1 and os.environ.get("PREFSYNTH_RAY_ACTOR"):
        # Inside a Ray executor actor: vLLM's workers go into the actor's placement group.
        kwargs["distributed_executor_backend"] = "ray"
    return LLM(**kwargs)


def engine_key(model: str, engine: Engine, *, seed: int, runner: str | None = None) -> str:
    """What `make_llm` builds from these arguments: stages with equal keys can share one engine."""
    return json.dumps({"model": model, "engine": engine.model_dump(mode="json"), "seed": seed, "runner": runner},
                      sort_keys=True)


def request_seed(seed: int, key: str) -> int:
    """Seed of one request (key: a prompt id, or whatever identifies the request), so its samples do
    not depend on which shard, batch, engine or executor it lands in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little") >> 1


def max_model_len(llm: Any) -> int:
    return llm.llm_engine.model_config.max_model_len


def generate_from_ids(llm: Any, prompt_token_ids: list[list[int]], params: Any) -> list[Any]:
    """`LLM.generate` on conversations the op has already rendered with the chat template (to check
    their length): the same requests `LLM.chat` makes, without rendering every template a second
    time in the thread that steps the engine."""
    if not prompt_token_ids:
        return []
    return llm.generate([{"prompt_token_ids": ids} for ids in prompt_token_ids], params, use_tqdm=False)


def structured_outputs(schema: dict, compact_json: bool = True) -> Any:
    """vLLM structured-output constraint for `schema`: compact JSON (grammar) or json=schema.

    Compact JSON: xgrammar converts the schema to a grammar without optional whitespace. With
    `json=schema` vLLM allows any whitespace, and small models can spend their whole token budget
    on it."""
    from vllm.sampling_params import StructuredOutputsParams

    if compact_json:
        try:
            import xgrammar
        except ImportError:  # a vLLM build without xgrammar: any whitespace, as vLLM does it
            pass
        else:
            grammar = xgrammar.Grammar.from_json_schema(
                json.dumps(schema), any_whitespace=False, separators=(",", ":")
            )
            return StructuredOutputsParams(grammar=str(grammar))
    return StructuredOutputsParams(json=schema)
