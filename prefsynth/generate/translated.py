"""Translate-completions: the baseline of "RLHF Can Speak Many Languages".

A translated prompt is answered in its source language (the original prompt goes to the model),
then the answers are translated into the prompt's language by a second stage
(`translate_completions.<generator>`). Prompts that were not translated are answered in their own
language. Candidates say which: strategy `translate_completions` with `source_text` (the answer
before translation) and `translator`, or `in_language`.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import schemas
from prefsynth.config import Translator
from prefsynth.stages import Op, ShardInput, ShardOutput

AWAITING = "awaiting_translation"


def answer_in_source_language(generate, llm: Any, prompts: pa.Table, source_prompts: pa.Table) -> ShardOutput:
    translated = pc.equal(prompts["origin"], "translated")
    direct = generate.sample(llm, prompts.filter(pc.invert(translated)), strategy="in_language")
    targets = prompts.filter(translated)
    wanted = pa.array(sorted(set(targets.column("source_prompt_id").to_pylist())), pa.string())
    sources = source_prompts.filter(pc.is_in(source_prompts["prompt_id"], wanted))
    answered = generate.sample(llm, sources)
    # Each source answer becomes a candidate of every translation of that source.
    frame = answered.table.to_pandas().rename(columns={"prompt_id": "source_prompt_id"})
    links = targets.select(["prompt_id", "language", "source_prompt_id"]).to_pandas()
    merged = links.merge(frame.drop(columns=["language"]), on="source_prompt_id", how="inner")
    merged["candidate_id"] = merged["prompt_id"] + "/" + generate.generator.name + "/" + merged["sample_index"].astype(str)
    merged["source_text"] = merged["text"]
    merged["note"] = AWAITING
    table = pa.Table.from_pandas(merged[list(schemas.CANDIDATES.names)], schema=schemas.CANDIDATES, preserve_index=False)
    rejects = pa.concat_tables([direct.rejects, answered.rejects])
    tokens = direct.stats.get("output_tokens", 0) + answered.stats.get("output_tokens", 0)
    return ShardOutput(pa.concat_tables([direct.table, table]), rejects, {"output_tokens": tokens})


class TranslateCompletions(Op):
    """Second half of translate_completions: translate awaiting answers into their prompt's language."""

    uses_model = True

    def __init__(self, generator_name: str, translator: Translator):
        self.generator_name, self.translator = generator_name, translator

    def config(self) -> dict:
        return {"generator": self.generator_name, "translator": self.translator.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "TranslateCompletions":
        return cls(config["generator"], Translator.model_validate(config["translator"]))

    def load(self) -> Any:
        from prefsynth.translate.prompts import load_translator

        return load_translator(self.translator)

    def process(self, translator: Any, shard: ShardInput) -> ShardOutput:
        from prefsynth.translate.prompts import translate_protected

        candidates = shard.table.to_pandas()
        src_language = dict(zip(shard.prompts.column("prompt_id").to_pylist(), shard.prompts.column("src_language").to_pylist()))
        awaiting = candidates["note"] == AWAITING
        candidates["src_language"] = candidates["prompt_id"].map(src_language)
        failed, rejects = [], []
        for (source, target), group in candidates[awaiting].groupby(["src_language", "language"]):
            results = translate_protected(translator, group["text"].tolist(), source, target)
            ok = [text is not None for text, _ in results]
            done = group.index[ok]
            candidates.loc[done, "text"] = [text for text, _ in results if text is not None]
            candidates.loc[done, "note"] = None
            candidates.loc[done, "translator"] = self.translator.model
            for index, (_, reason) in zip(group.index, results):
                if reason is not None:
                    failed.append(index)
                    rejects.append({"stage": f"translate_completions.{self.generator_name}",
                                    "prompt_id": candidates.at[index, "prompt_id"],
                                    "candidate_id": candidates.at[index, "candidate_id"],
                                    "reason": reason.split(":")[0], "detail": f"{source} -> {target}: {reason}"})
        candidates = candidates.drop(index=failed)[list(schemas.CANDIDATES.names)]
        table = pa.Table.from_pandas(candidates, schema=schemas.CANDIDATES, preserve_index=False)
        return ShardOutput(table, schemas.rejects_table(rejects), {"translated": int(awaiting.sum()) - len(failed)})
