"""Negatively-correlated sampling as a generator strategy.

One JSON-constrained request per prompt asks for n deliberately different answers
(generate/diverse.py). Prompts whose answers do not parse fall back to plain sampling, and those
candidates carry `strategy=in_language` with `note=diverse_fallback:<reason>`, so a user sees how
often the fallback ran.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from prefsynth import schemas
from prefsynth.generate.diverse import diverse_samples
from prefsynth.engine import request_seed
from prefsynth.stages import ShardOutput


def diverse_candidates(generate, llm: Any, prompts: pa.Table) -> ShardOutput:
    g = generate.generator
    conversations = generate.conversations(prompts)
    kept, _, rejects = generate.fitting(llm, prompts, conversations)
    prompt_ids = prompts.column("prompt_id").to_pylist()
    languages = prompts.column("language").to_pylist()
    results = diverse_samples(
        llm, [conversations[i] for i in kept], [languages[i] for i in kept], g.n,
        {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens * g.n},
        max_chars=g.diverse_max_chars, seeds=[request_seed(generate.seed, prompt_ids[i]) for i in kept],
    )
    columns: dict[str, list] = {name: [] for name in (
        "candidate_id", "prompt_id", "language", "sample_index", "text", "finish_reason",
        "prompt_tokens", "completion_tokens", "seed", "note")}
    fallback: dict[str, list[int]] = {}
    tokenizer = llm.get_tokenizer()
    for index, result in zip(kept, results):
        if not result.parsed or len(result.texts) < g.n:
            fallback.setdefault(result.reason or "unparsed", []).append(index)
            continue
        pid = prompt_ids[index]
        for sample_index, text in enumerate(result.texts):
            columns["candidate_id"].append(f"{pid}/{g.name}/{sample_index}")
            columns["prompt_id"].append(pid)
            columns["language"].append(languages[index])
            columns["sample_index"].append(sample_index)
            columns["text"].append(text)
            columns["finish_reason"].append(result.finish_reason)
            columns["prompt_tokens"].append(result.prompt_tokens)
            columns["completion_tokens"].append(len(tokenizer.encode(text, add_special_tokens=False)))
            columns["seed"].append(request_seed(generate.seed, pid))
            columns["note"].append(result.note)
    tables = [generate.table(columns)]
    all_rejects = [schemas.rejects_table(rejects)]
    tokens = sum(r.completion_tokens for r in results)
    for reason, indices in fallback.items():
        out = generate.sample(llm, prompts.take(pa.array(indices)), strategy="in_language",
                              note=f"diverse_fallback:{reason}")
        tables.append(out.table)
        all_rejects.append(out.rejects)
        tokens += out.stats.get("output_tokens", 0)
    return ShardOutput(pa.concat_tables(tables), pa.concat_tables(all_rejects), {"output_tokens": tokens})
